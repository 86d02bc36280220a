"""The deployed models against MobileNetV3 trained to convergence, timed side by side on this CPU.

The references: the MobileNetV3-Small and -Large layouts of the headline run's space
(``edgenas.search_spaces.reference_archs``), each built alone and trained from scratch on the
full training split with the recipe and the number of epochs the deployed models get in
finalize (``finalize.distill_epochs`` of the config; warm-up and cosine at lr 0.1 from
scratch, label smoothing, the data set's augmentation, the best epoch on validation kept),
``--seeds`` seeds. Each is exported as finalize exports (fp32 ONNX with its preprocessing
metadata) and scored on the test split the way ``edgenas predict`` scores a file. Then every
deployed file of ``bench/deploy.py`` (``bench/results/fashion-mnist/<device>/``) and every
reference's seed-0 file are timed in ``--batches`` interleaved batches, each file's median over
them (ONNX Runtime, 1 thread, batch 1).

Target: against every reference, a deployed model with >= +1 pt test accuracy at <= its
measured latency, or >= 1.5x faster at >= its accuracy.

Resumable, also on another machine: every (reference, seed) result is written to
``bench/results/references/`` when it is done (with where it was trained); a rerun trains
only what is missing. On a GPU (``bench/cuda.sh`` with CUDA_REFERENCES=1) a reference takes
~4 minutes instead of ~37 on 2 CPU cores; the timing batch then runs here, on the target CPU,
with the ONNX files copied to ``--workdir``.

    python bench/references.py                   # after bench/deploy.py
    python bench/references.py --only mbv3-small-0.75 --seeds 1
    python bench/references.py --no-train        # only the timing batch
    python bench/references.py --no-train --deployed runs/x/finalize/cpu-fast --name references_x
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from _setup import log, md_code

from edgenas import pipeline
from edgenas.accelerator import Accelerator
from edgenas.config import FitConfig, load_config
from edgenas.distill import fit
from edgenas.export import export_onnx, with_metadata
from edgenas.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend, Protocol, reference_model
from edgenas.layout import ModelCard
from edgenas.nas import accuracy, set_threads
from edgenas.predict import Model, top1
from edgenas.preprocess import preprocessing_metadata
from edgenas.reports import accuracy_margin_pts
from edgenas.search_spaces import build_subnet, reference_archs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated reference names (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="default: the config's finalize.distill_epochs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    p.add_argument("--workdir", default="runs/bench_references")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--no-train", action="store_true", help="only the timing batch, over the results already there")
    p.add_argument(
        "--deployed",
        nargs="+",
        default=None,
        help="finalize output folders (with model_card.json) to compare; default: bench/deploy.py's, "
        "bench/results/fashion-mnist/<device> for each device of the config",
    )
    p.add_argument("--name", default="references", help="the result files' name in --out (NAME.json, .md, .png)")
    p.add_argument(
        "--batches",
        type=int,
        default=5,
        help="interleaved timing batches; each file's latency is its median over them (a shared VM changes speed "
        "between batches, by up to 1.5x here)",
    )
    args = p.parse_args()
    if args.batches < 1:
        p.error(f"--batches must be >= 1, got {args.batches}")

    set_threads(args.threads)
    config = load_config(args.config)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    recipe = reference_recipe(config, args.epochs)
    epochs = recipe.epochs
    refs = reference_archs(space)
    names = args.only.split(",") if args.only else list(refs)
    results_dir, work = Path(args.out) / "references", Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in [] if args.no_train else names:
        for seed in range(args.seeds):
            path = results_dir / f"{name}_s{seed}.json"
            if _done(path, epochs):
                continue  # done; where its file is not here, the timing batch times its layout (compare)
            row = train_reference(space, refs[name], splits, dataclasses.replace(recipe, seed=seed), work / name, seed)
            atomic_write_json(path, {"name": name, "arch": str(refs[name]), "seed": seed, "epochs": epochs, **row})
            log(f"{name} seed {seed}: test {row['test_accuracy'] * 100:.2f} % ({row['minutes']:.1f} min)")
    kept = Path("bench/results/fashion-mnist")
    deployed = [Path(f) for f in args.deployed] if args.deployed else [kept / d.name for d in config.devices]
    summary = compare(space, deployed, names, epochs, results_dir, work, args.batches)
    stem = Path(args.out) / args.name
    atomic_write_json(stem.with_suffix(".json"), summary)
    atomic_write_text(stem.with_suffix(".md"), markdown(summary, epochs))
    figure(summary).write_image(str(stem.with_suffix(".png")), width=900, height=520)
    print(markdown(summary, epochs))


def reference_recipe(config, epochs: int | None = None) -> FitConfig:
    """How a reference is trained from scratch: lr 0.1, one warm-up epoch then cosine, label smoothing 0.1, the
    data set's augmentation, for ``epochs`` (default: the epochs finalize distils for, ``config``'s)."""
    return FitConfig(
        epochs=epochs or config.finalize.distill_epochs,
        lr=0.1,
        warmup_epochs=1.0,
        label_smoothing=0.1,
        augment=config.data.augmentations,
    )


def _batches(rows: list[dict]) -> int:
    return len(rows[0].get("latency_ms_batches", [0])) if rows else 0


def _done(path: Path, epochs: int) -> bool:
    """A result trained with another number of epochs is stale: trained again, never compared."""
    return path.exists() and read_json(path).get("epochs", len(read_json(path)["val_curve"])) == epochs


def train_reference(space, arch, splits, recipe: FitConfig, stem: Path, seed: int) -> dict:
    """One reference trained from scratch, its best epoch on validation kept, exported, scored on test."""
    import copy

    import torch

    torch.manual_seed(seed)
    net = build_subnet(space, arch)
    accel = Accelerator.create("auto")
    best = {"val": -1.0, "state": None, "epoch": 0}
    curve = []

    def keep(epoch: int, model) -> dict:
        val = accuracy(model, splits.val, splits, resolution=arch.resolution, channels=space.in_chs)
        curve.append(val)
        if val > best["val"]:
            best.update(val=val, state=copy.deepcopy(model.state_dict()), epoch=epoch)
        shown = f"val {val * 100:.2f} % (best {best['val'] * 100:.2f} %)"
        log(f"{stem.name} seed {seed} epoch {epoch}/{recipe.epochs}: {shown}")
        return {"val_accuracy": val}

    start = time.time()
    fit(
        net,
        splits,
        recipe,
        resolution=arch.resolution,
        channels=space.in_chs,
        on_epoch=keep,
        accel=accel,
        desc=stem.name,
        progress=False,
    )
    net.load_state_dict(best["state"])
    meta = preprocessing_metadata(
        resolution=arch.resolution,
        channels=space.in_chs,
        mean=splits.mean,
        std=splits.std,
        classes=list(splits.train.classes),
        arch=str(arch),
        space=space.name,
        data={"name": "fashion-mnist"},
    )
    file = Path(f"{stem}_s{seed}.onnx")
    atomic_write_bytes(
        file, with_metadata(export_onnx(net.eval(), (1, space.in_chs, arch.resolution, arch.resolution)), meta)
    )
    return {
        "val_curve": curve,
        "kept_epoch": best["epoch"],
        "val_accuracy": best["val"],
        "test_accuracy": top1(Model.load(file), splits.test),
        "minutes": (time.time() - start) / 60,
        "file": str(file),
        "compute": accel.describe(),
    }


def compare(
    space, deployed: list[Path], names: list[str], epochs: int, results_dir: Path, work: Path, batches: int = 5
) -> dict:
    """The deployed files (of each finalize folder in ``deployed``) and the references' seed-0 files timed in
    ``batches`` interleaved batches (each file's median over them); who beats whom.

    A reference counts with every seed trained for ``epochs`` so far (the table says how many). Where its
    seed-0 file is not in ``work`` (trained on another machine, only its result committed), its layout is
    exported with fresh weights and timed instead: the same graph, and ONNX Runtime's time does not depend
    on the weights' values.
    """
    models, rows = [], []
    clash = len({f.name for f in deployed}) < len(deployed)  # two runs' devices of one name: say whose
    for folder in deployed:
        if not (folder / "model_card.json").exists():
            log(f"{folder}: no model card (not finalized yet); left out")
            continue
        card = ModelCard.load(folder / "model_card.json")
        n = card.data["data_sizes"]["test"]
        for stage in (s for s in ("pruned", "qat_int8") if s in card.stages):  # no QAT file where QAT was skipped
            acc = card.stages[stage]["test_accuracy"]
            rows.append(
                {
                    "kind": "edgenas",
                    "name": f"{folder.parent.name + '/' if clash else ''}{folder.name} {stage}",
                    "arch": card.arch,
                    "deployed": card.deployed_stage == stage,
                    "test_accuracy": acc,
                    "margin_pts": accuracy_margin_pts(acc, n),
                }
            )
            models.append((folder / f"{stage}.onnx").read_bytes())
    for name in names:
        seeds_done = [read_json(p) for p in sorted(results_dir.glob(f"{name}_s*.json")) if _done(p, epochs)]
        if not seeds_done:
            log(f"{name}: no result trained for {epochs} epochs; left out")
            continue
        file = work / f"{name}_s0.onnx"
        accs = [r["test_accuracy"] for r in seeds_done]
        rows.append(
            {
                "kind": "MobileNetV3",
                "name": name,
                "arch": seeds_done[0]["arch"],
                "deployed": False,
                "test_accuracy": sum(accs) / len(accs),
                "seeds": accs,
                "margin_pts": accuracy_margin_pts(sum(accs) / len(accs), 10_000),
                "trained_on": _trained_on(seeds_done[0]),
                "timed": "its file" if file.exists() else "its layout with fresh weights (the file is not here)",
            }
        )
        models.append(file.read_bytes() if file.exists() else _layout_onnx(space, seeds_done[0]["arch"]))
    backend = LocalBackend(threads=1)
    runs = [backend.measure(models, reference_model("fp32"), Protocol(rounds=30))[0] for _ in range(batches)]
    for i, row in enumerate(rows):
        row["latency_ms_batches"] = [timings[i].ms for timings in runs]
        row["latency_ms"] = statistics.median(row["latency_ms_batches"])
    ours = [r for r in rows if r["kind"] == "edgenas"]
    verdicts = {}
    for ref in (r for r in rows if r["kind"] == "MobileNetV3"):
        faster = [r for r in ours if r["latency_ms"] <= ref["latency_ms"]]
        better = [r for r in ours if r["test_accuracy"] >= ref["test_accuracy"]]
        gain = max(faster, key=lambda r: r["test_accuracy"], default=None)
        speed = min(better, key=lambda r: r["latency_ms"], default=None)
        verdicts[ref["name"]] = {
            "gain_pts_at_lower_latency": (gain["test_accuracy"] - ref["test_accuracy"]) * 100 if gain else None,
            "gain_model": gain["name"] if gain else None,
            "speedup_at_equal_accuracy": ref["latency_ms"] / speed["latency_ms"] if speed else None,
            "speedup_model": speed["name"] if speed else None,
        }
        v = verdicts[ref["name"]]
        v["beaten"] = (v["gain_pts_at_lower_latency"] or -1) >= 1.0 or (v["speedup_at_equal_accuracy"] or 0) >= 1.5
    return {"rows": rows, "verdicts": verdicts}


def _layout_onnx(space, arch: str) -> bytes:
    """A reference's layout exported as its trained file is, with freshly initialised weights."""
    import torch

    torch.manual_seed(0)
    parsed = space.parse(arch)
    net = build_subnet(space, parsed).eval()
    return export_onnx(net, (1, space.in_chs, parsed.resolution, parsed.resolution))


def _trained_on(result: dict) -> str:
    c = result.get("compute")
    return f"{c['name']} ({c['precision']})" if c else "this CPU (fp32)"


def markdown(summary: dict, epochs: int) -> str:
    rows, verdicts = summary["rows"], summary["verdicts"]
    beaten = sum(v["beaten"] for v in verdicts.values())
    where = sorted({r["trained_on"] for r in rows if r.get("trained_on")})
    lines = [
        "# The deployed models against MobileNetV3 trained to convergence",
        "",
        f"References: the MobileNetV3 layouts of the space, trained from scratch for {epochs} epochs on the full "
        f"training split (lr 0.1, warm-up + cosine, label smoothing 0.1, crop + flip, best epoch on validation), "
        f"every seed done so far (mean shown, seeds in brackets), trained on {', '.join(where)}. "
        f"Every file timed in {_batches(rows)} interleaved batches, its median shown (ONNX Runtime fp32/int8, 1 "
        "thread, batch 1); test accuracy on the official 10,000 images as `edgenas predict` scores the file "
        "(± half the 95 % interval from the split's size)."
        + (
            " A reference whose trained file was not on this machine was timed as its layout with fresh weights "
            "(the same graph; the runtime's time does not depend on the weights' values)."
            if any(r.get("timed", "its file") != "its file" for r in rows)
            else ""
        ),
        "",
        "| model | arch | test accuracy | latency (ms) |",
        "|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        star = " (deployed)" if r["deployed"] else ""
        seeds_txt = f" ({', '.join(f'{a * 100:.2f}' for a in r['seeds'])})" if r.get("seeds") else ""
        lines.append(
            f"| {r['name']}{star} | {md_code(r['arch'])} | {r['test_accuracy'] * 100:.2f} % ± "
            f"{r['margin_pts']:.2f}{seeds_txt} | {r['latency_ms']:.3f} |"
        )
    lines += [
        "",
        "| reference | best gain at <= its latency | best speed-up at >= its accuracy | beaten |",
        "|---|---|---|---|",
    ]
    for name, v in verdicts.items():
        gain = f"{v['gain_pts_at_lower_latency']:+.2f} pt ({v['gain_model']})" if v["gain_model"] else "none faster"
        speed = (
            f"{v['speedup_at_equal_accuracy']:.2f}x ({v['speedup_model']})" if v["speedup_model"] else "none as good"
        )
        lines.append(f"| {name} | {gain} | {speed} | {'yes' if v['beaten'] else 'no'} |")
    lines += [
        "",
        f"Target (>= +1 pt at <= latency, or >= 1.5x faster at >= accuracy): {beaten} of {len(verdicts)} "
        "references beaten.",
    ]
    return "\n".join(lines) + "\n"


def figure(summary: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind, symbol in (("edgenas", "star"), ("MobileNetV3", "circle")):
        rs = [r for r in summary["rows"] if r["kind"] == kind]
        fig.add_trace(
            go.Scatter(
                x=[r["latency_ms"] for r in rs],
                y=[r["test_accuracy"] * 100 for r in rs],
                mode="markers+text",
                text=[r["name"] for r in rs],
                textposition="top center",
                name=kind,
                marker=dict(symbol=symbol, size=11),
                error_y=dict(type="data", array=[r["margin_pts"] for r in rs], visible=True),
            )
        )
    fig.update_layout(
        title="Deployed models vs MobileNetV3 trained to convergence (this CPU, 1 thread)",
        xaxis_title="measured latency (ms)",
        yaxis_title="test accuracy (%)",
        template="plotly_white",
    )
    return fig


if __name__ == "__main__":
    main()
