"""Searched archs against the MobileNetV3 layouts, all trained stand-alone with one recipe, latency measured.

A search with the default strategy (``--sampler``, ``--trials``; no latency budget, so its
front spans the space) on the supernet of ``bench/supernet.py`` and this CPU's fp32
table. For each MobileNetV3-Small and -Large layout at widths 0.5 / 0.75 / 1.0 expressed in
the bench space (``edgenas.search_spaces.reference_archs``), two archs are taken from the
search's front, judged by the supernet's *validation* accuracy and the table: the most
accurate one at or below the reference's predicted latency, and the fastest one at or
above its supernet accuracy. References and picks are trained stand-alone with the
library's recipe (``--epochs`` on ``--train-limit`` training images, seeds 0..``--seeds``-1;
mean test accuracy reported) and exported; all seed-0 exports are timed end to end in one
interleaved batch (ONNX Runtime, 1 thread, batch 1).

Target (issue "a search that beats random search"): against every reference, a searched
arch with >= +1 pt test accuracy at equal or lower measured latency, or >= 1.5x faster at
equal or better accuracy.

``--finalize``: the same models taken through finalize instead of stand-alone training,
all with one recipe (supernet weights, ``--finalize-epochs`` of distillation from the
largest subnet, one 10 % pruning step, one QAT epoch, on the same ``--train-limit``
images; the precision deployed is the faster one measured). Each deployed file is scored on
the test split; the seed-0 files are timed in one interleaved batch. Results:
``references_finalized.{md,json,png}``.

Resumable, also on another machine: the chosen models and each (arch, seed) result are kept
with the results (``--out``) as they are made; the exports and the search stay in
``--workdir`` (re-exported from seed 0's weights if missing: seed 0 is trained again).

    python bench/references.py                 # 3 epochs on 15,000 images, 2 seeds
    python bench/references.py --finalize      # finalized instead: 1 distillation epoch, 2 seeds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _setup import LUT_FP32, add_supernet_args, bench_predictor, bench_splits, log, md_code, recipe_fit, supernet_bench

from edgenas.distill import fit
from edgenas.export import export_onnx
from edgenas.finalize import FinalizeConfig, finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend, Protocol, reference_model
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, accuracy, pareto_rows, run_search
from edgenas.pruning import PruneConfig
from edgenas.search_spaces import build_subnet, reference_archs

LAT = "latency_ms:cpu-fp32"


def picks_for(refs: dict[str, dict], front: list[dict]) -> dict[str, str]:
    """Front archs (by supernet val accuracy and predicted ms) that could beat each reference: name -> arch."""
    picks: dict[str, str] = {}
    for ref in refs.values():
        faster = [r for r in front if r[LAT] <= ref[LAT]]
        as_good = [r for r in front if r["accuracy"] >= ref["accuracy"]]
        for r in (
            max(faster, key=lambda r: r["accuracy"]) if faster else None,
            min(as_good, key=lambda r: r[LAT]) if as_good else None,
        ):
            if r is not None and r["arch"] not in picks.values():
                picks[f"searched-{len(picks) + 1}"] = r["arch"]
    return picks


def compare(rows: list[dict]) -> list[dict]:
    """Each reference against the searched models: accuracy gain at <= latency, speed-up at >= accuracy."""
    searched = [r for r in rows if r["name"].startswith("searched")]
    out = []
    for r in rows:
        if r["name"].startswith("searched"):
            continue
        faster = [s for s in searched if s["measured_ms"] <= r["measured_ms"]]
        best = max(faster, key=lambda s: s["test_accuracy"]) if faster else None
        as_good = [s for s in searched if s["test_accuracy"] >= r["test_accuracy"]]
        quickest = min(as_good, key=lambda s: s["measured_ms"]) if as_good else None
        gain = (best["test_accuracy"] - r["test_accuracy"]) * 100 if best else None
        speedup = r["measured_ms"] / quickest["measured_ms"] if quickest else None
        beaten = (gain is not None and gain >= 1.0) or (speedup is not None and speedup >= 1.5)
        out.append(
            {
                "reference": r["name"],
                "ref_accuracy": r["test_accuracy"],
                "ref_ms": r["measured_ms"],
                "best_at_latency": best and best["name"],
                "gain_pts": gain,
                "fastest_at_accuracy": quickest and quickest["name"],
                "speedup": speedup,
                "beaten": bool(beaten),
            }
        )
    return out


def finalized(
    args: argparse.Namespace, models: dict[str, str], space, supernet, backend, work: Path, out: Path
) -> dict:
    """Every model finalized with one recipe per seed: arch#seed -> deployed file and its test accuracy."""
    path = out / f"references_finalized_e{args.finalize_epochs}_n{args.train_limit}.json"
    done: dict = read_json(path) if path.exists() else {}
    limited = bench_splits(args.train_limit)
    for seed in range(args.seeds):
        for name, arch_str in models.items():
            key = f"{arch_str}#seed{seed}"
            folder = work / "finalized" / f"{arch_str.replace('|', '_')}_s{seed}"
            if key in done and (seed or (folder / done[key]["file"]).exists()):
                continue
            t0 = time.time()
            config = FinalizeConfig(
                distill_epochs=args.finalize_epochs,
                prune=PruneConfig(step=0.1, max_steps=1),
                qat_epochs=1,
                measure_rounds=5,
                seed=seed,
                accept_failed_checks=True,
            )
            card = finalize_arch(
                space.parse(arch_str),
                space=space,
                supernet=supernet,
                splits=limited,
                backend=backend,
                out_dir=folder,
                config=config,
                progress=False,
            )
            dep = card["deployed"]
            done[key] = {
                "file": dep["file"],
                "precision": dep["precision"],
                "test": dep["test_accuracy"],
                "seconds": time.time() - t0,
                "failed_checks": card["failed_checks"],
            }
            atomic_write_json(path, done)
            log(
                f"{name} seed {seed}: finalized, {dep['precision']} test {dep['test_accuracy']:.4f} "
                f"({time.time() - t0:.0f} s)"
            )
    return done


def standalone(args: argparse.Namespace, models: dict[str, str], space, splits, work: Path, out: Path) -> dict:
    """Every model trained from scratch per seed: arch#seed -> its test accuracy (seed 0 exported)."""
    path = out / f"references_standalone_e{args.epochs}_n{args.train_limit}.json"
    done: dict = read_json(path) if path.exists() else {}
    limited = bench_splits(args.train_limit)
    for seed in range(args.seeds):
        for name, arch_str in models.items():
            key = f"{arch_str}#seed{seed}"
            onnx_path = work / f"{arch_str.replace('|', '_')}.onnx"
            if key in done and (seed or onnx_path.exists()):
                continue
            arch = space.parse(arch_str)
            torch.manual_seed(seed)
            net = build_subnet(space, arch)
            t0 = time.time()
            fit(
                net,
                limited,
                recipe_fit(args.epochs, seed),
                resolution=arch.resolution,
                channels=space.in_chs,
                progress=False,
            )
            test = accuracy(net, splits.test, splits, resolution=arch.resolution, channels=space.in_chs)
            if seed == 0:
                export_onnx(net.eval(), net.input_shape, onnx_path)
            done[key] = {"test": test, "seconds": time.time() - t0}
            atomic_write_json(path, done)
            log(f"{name} seed {seed}: test {test:.4f} ({time.time() - t0:.0f} s)")
    return done


def figure(rows: list[dict], front: list[dict], how: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r[LAT] for r in front],
            y=[r["accuracy"] * 100 for r in front],
            mode="markers",
            name="search front (supernet val accuracy, predicted ms)",
            marker={"color": "lightgray"},
            text=[r["arch"] for r in front],
        )
    )
    for kind, color in (("mbv3", "crimson"), ("searched", "royalblue")):
        part = [r for r in rows if r["name"].startswith(kind)]
        fig.add_trace(
            go.Scatter(
                x=[r["measured_ms"] for r in part],
                y=[r["test_accuracy"] * 100 for r in part],
                mode="markers+text",
                name=f"{kind} ({how} test accuracy, measured ms)",
                text=[r["name"] for r in part],
                textposition="top center",
                marker={"color": color, "size": 10},
                error_y={"type": "data", "array": [r["test_std"] * 100 for r in part]},
            )
        )
    fig.update_layout(
        title="Searched archs vs MobileNetV3 layouts (Fashion-MNIST, this CPU, 1 thread)",
        xaxis_title="latency (ms)",
        yaxis_title="accuracy (%)",
        template="plotly_white",
    )
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sampler", default="guided")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3, help="stand-alone epochs")
    p.add_argument("--train-limit", type=int, default=15000, help="stand-alone training images")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--finalize", action="store_true", help="finalize the models instead of training them alone")
    p.add_argument("--finalize-epochs", type=int, default=1, help="distillation epochs of --finalize")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--val-images", type=int, default=None)
    p.add_argument("--lut", default=LUT_FP32, help="built and validated here if missing")
    add_supernet_args(p, workdir="runs/bench_references")
    args = p.parse_args()

    work, out = Path(args.workdir), Path(args.out)
    space, splits, supernet = supernet_bench(args)
    backend = LocalBackend(threads=1)
    predictor = bench_predictor(space, Path(args.lut), backend)
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=args.calib_batches, images=args.val_images, seed=0)
    config = SearchConfig(
        sampler=args.sampler,
        n_trials=args.trials,
        seed=0,
        study_name=f"{args.sampler}-front",
        calib_batches=args.calib_batches,
        val_images=args.val_images,
    )
    study = run_search(
        space, evaluator, [DeviceObjective("cpu-fp32", predictor)], config, work / "search", progress=False
    )
    _, front = pareto_rows(study)
    refs = {
        name: {"arch": str(a), "accuracy": evaluator(a), LAT: predictor.predict(a)}
        for name, a in reference_archs(space).items()
    }
    # the models are chosen once and kept with the results: another machine's table and
    # evaluation could pick others, and the results made so far would not be reused
    chosen = out / f"references_models_{args.sampler}_t{args.trials}.json"
    if chosen.exists():
        models = read_json(chosen)
    else:
        models = {name: r["arch"] for name, r in refs.items()} | picks_for(refs, front)
        atomic_write_json(chosen, models)
    log(f"{len(front)} archs on the front; {len(models) - len(refs)} picked against {len(refs)} references")

    if args.finalize:
        done = finalized(args, models, space, supernet, backend, work, out)
        files = [work / "finalized" / f"{a.replace('|', '_')}_s0" / done[f"{a}#seed0"]["file"] for a in models.values()]
    else:
        done = standalone(args, models, space, splits, work, out)
        files = [work / f"{a.replace('|', '_')}.onnx" for a in models.values()]
    timings, ref, _ = backend.measure([f.read_bytes() for f in files], reference_model("fp32"), Protocol(rounds=30))
    rows = []
    for (name, arch_str), t in zip(models.items(), timings):
        arch = space.parse(arch_str)
        accs = [done[f"{arch_str}#seed{s}"]["test"] for s in range(args.seeds)]
        rows.append(
            {
                "name": name,
                "arch": arch_str,
                "test_accuracy": float(np.mean(accs)),
                "test_std": float(np.std(accs)),
                "seeds": accs,
                "measured_ms": t.ms,
                "predicted_ms": predictor.predict(arch),
                "supernet_val": evaluator(arch),
            }
        )
    comparisons = compare(rows)
    beaten = sum(c["beaten"] for c in comparisons)
    stem = "references_finalized" if args.finalize else "references"
    atomic_write_json(
        out / f"{stem}.json", {"settings": vars(args), "front": front, "models": rows, "comparisons": comparisons}
    )
    how = "finalized" if args.finalize else "stand-alone"
    figure(rows, front, how).write_image(str(out / f"{stem}.png"), width=1000, height=600)

    if args.finalize:
        precisions = sorted({done[f"{a}#seed0"]["precision"] for a in models.values()})
        title = (
            f"# Searched archs vs MobileNetV3, finalized ({args.seeds} seeds, {args.finalize_epochs} "
            f"distillation epoch(s) on {args.train_limit:,} images)"
        )
        command = f"--finalize --finalize-epochs {args.finalize_epochs}"
        recipe = (
            "references and picks finalized with one recipe (supernet weights, distillation from the largest "
            "subnet, one 10 % pruning step with a finetune epoch, one QAT epoch; the faster precision "
            f"measured is deployed: {', '.join(precisions)}), mean test accuracy of the deployed file over "
            "seeds; the seed-0 files timed end to end in one interleaved batch (ONNX Runtime, 1 thread, "
            "batch 1)."
        )
    else:
        title = (
            f"# Searched archs vs MobileNetV3 ({args.seeds} seeds, {args.epochs} epochs on {args.train_limit:,} images)"
        )
        command = f"--epochs {args.epochs}"
        recipe = (
            "references and picks trained stand-alone with the library's recipe, mean test accuracy over "
            "seeds; latency measured end to end in one interleaved batch (ONNX Runtime fp32, 1 thread, "
            "batch 1)."
        )
    md = [
        title,
        "",
        f"`python bench/references.py --sampler {args.sampler} --trials {args.trials} {command} "
        f"--train-limit {args.train_limit} --seeds {args.seeds}`: picks from a {args.trials}-trial `{args.sampler}` "
        f"search's front (supernet validation accuracy, predicted latency), {recipe}",
        "",
        f"**Target (every reference beaten by >= +1 pt at <= latency or >= 1.5x faster at >= accuracy): "
        f"{beaten} of {len(comparisons)} references beaten.**",
        "",
        "| model | arch | test accuracy (mean ± std) | measured ms | predicted ms | supernet val |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['name']} | {md_code(r['arch'])} | {r['test_accuracy'] * 100:.2f} ± "
            f"{r['test_std'] * 100:.2f} % | {r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | "
            f"{r['supernet_val'] * 100:.2f} % |"
        )
    md += [
        "",
        "| reference | accuracy | ms | best searched at <= ms | gain (pts) | fastest searched at >= accuracy | "
        "speed-up | beaten |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        gain = f"{c['gain_pts']:+.2f}" if c["gain_pts"] is not None else "-"
        speed = f"{c['speedup']:.2f}x" if c["speedup"] is not None else "-"
        md.append(
            f"| {c['reference']} | {c['ref_accuracy'] * 100:.2f} % | {c['ref_ms']:.3f} | "
            f"{c['best_at_latency'] or '-'} | {gain} | {c['fastest_at_accuracy'] or '-'} | {speed} | "
            f"{'yes' if c['beaten'] else 'no'} |"
        )
    md += ["", f"![front and references]({stem}.png)"]
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
