"""The headline run: ``edgenas run configs/fashion-mnist.yaml``, its deployed files and cards kept.

Seeds the run directory with a committed supernet where there is one, so that the run need not
train it again (``--train`` trains it anyway): for a config that trains its supernet from
scratch, ``bench/results/supernet_fmnist.pt`` (trained by ``bench/supernet.py`` with exactly
those settings, about 80 minutes on 2 cores); for one that starts from it (``train.init_from``,
the headline config), the supernet an earlier run of this script kept in
``bench/results/supernet_<run folder>.pt``, else the run trains it and keeps it there. Then it
runs every stage through the package's pipeline (the path ``edgenas run`` takes), copies each
device's fp32 and QAT int8 ONNX files and model card
to ``bench/results/fashion-mnist/<device>/`` and writes ``bench/results/deploy.{json,md}``:
per device the budget, the arch, the stage table, the distillation curve, the validation
accuracy after each step, and the compute every stage used.

    python bench/deploy.py        # resumable: run it again after an interruption
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from _setup import SUPERNET, keep_weights, log, md_code, quiet_optuna

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.layout import STAGES, Front, ModelCard
from edgenas.reports import accuracy_margin_pts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--train", action="store_true", help="train the supernet instead of starting from SUPERNET")
    p.add_argument("--out", default="bench/results")
    p.add_argument(
        "--collect",
        action="store_true",
        help="only gather the devices finalized so far (no run); a device this run has not finalized keeps its "
        "entry of the earlier deploy.json, marked as from an earlier run",
    )
    args = p.parse_args()

    config = load_config(args.config)
    layout, out = config.layout, Path(args.out)
    kept_supernet = committed_supernet(config, out)
    if not args.train and not layout.supernet.exists() and kept_supernet.exists():
        layout.root.mkdir(parents=True, exist_ok=True)
        shutil.copy(kept_supernet, layout.supernet)  # the train stage finds it finished and resumes nothing
        log(f"supernet: {kept_supernet} (trained with these settings)")
    if not args.collect:
        start = time.time()
        quiet_optuna()
        pipeline.run(config)
        log(f"run finished in {(time.time() - start) / 60:.1f} minutes")
        if config.train.init_from is not None and not kept_supernet.exists():
            keep_weights(layout.supernet, kept_supernet)

    kept = out / "fashion-mnist"
    earlier = read_json(out / "deploy.json") if args.collect and (out / "deploy.json").exists() else {}
    compute = _compute(config)
    results = {
        "config": args.config,
        "devices": {},
        "compute": compute or earlier.get("compute", {}),
        "compute_of": "this run" if compute or not earlier else "an earlier run",
        "not_finalized": [],
    }
    front = Front.load(layout.front) if layout.front.exists() else None
    for d in config.devices:
        if not layout.model_card(d.name).exists():
            if d.name in earlier.get("devices", {}):
                results["devices"][d.name] = {**earlier["devices"][d.name], "earlier_run": True}
            else:
                results["not_finalized"].append(d.name)
            continue
        card = ModelCard.load(layout.model_card(d.name))
        folder = kept / d.name
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("pruned.onnx", "qat_int8.onnx", "model_card.json", "model_card.md"):
            (folder / name).unlink(missing_ok=True)  # none of an earlier run stays (no QAT file where QAT was skipped)
            if (layout.finalize(d.name) / name).exists():
                shutil.copy(layout.finalize(d.name) / name, folder / name)
        results["devices"][d.name] = {
            "budget": front.budgets(d.name),
            "card": card.data,
            "choice": _choice(front, d.name),
        }
    atomic_write_json(out / "deploy.json", results)
    md = _markdown(results, args.config)
    atomic_write_text(out / "deploy.md", md)
    print(md)


def committed_supernet(config, out: Path) -> Path:
    """The committed supernet a run of ``config`` starts from: bench/supernet.py's for a config that trains one from
    scratch, else (``train.init_from``) the one an earlier run of this script kept for the config's run folder."""
    return Path(SUPERNET) if config.train.init_from is None else out / f"supernet_{config.layout.root.name}.pt"


def _choice(front: Front, device: str) -> dict:
    """The search's choice for ``device`` beside the most accurate arch within its budget (``search.tie_pts``)."""
    lat = f"latency_ms:{device}"

    def pick(r: dict) -> dict:
        return {"arch": r["arch"], "supernet_accuracy": r["accuracy"], "predicted_ms": r[lat]}

    ok = front.within_budget(device)
    return {
        "tie_pts": front.data.get("tie_pts", 0.0),
        "chosen": pick(front.best(device)),
        "most_accurate": pick(max(ok, key=lambda r: r["accuracy"])),
    }


def _compute(config) -> dict[str, float]:
    """Minutes per stage from the manifests; the supernet's own training time from its history, and where it
    started from another supernet (``train.init_from``), that one's training time too."""
    layout = config.layout
    minutes = {s: read_json(layout.manifest(s))["seconds"] / 60 for s in STAGES if layout.manifest(s).exists()}
    training = read_json(layout.training) if layout.training.exists() else None
    if training:
        minutes["supernet training (its epochs)"] = sum(h["seconds"] for h in training["history"]) / 60
    if config.train.init_from is not None:
        first = torch.load(config.train.init_from, map_location="cpu", weights_only=False)["history"]
        minutes["the supernet it started from (train.init_from)"] = sum(h["seconds"] for h in first) / 60
    return minutes


def _markdown(results: dict, config: str) -> str:
    lines = [
        "# The headline run: `edgenas run " + config + "`",
        "",
        "Full Fashion-MNIST (57,000 training, 3,000 validation, the official 10,000 test images), ONNX Runtime "
        "fp32 on this CPU, 1 thread, batch 1; every stage timed in one interleaved batch per device. "
        "Accuracy ± half the 95 % interval from the test split's size.",
        "",
        f"| stage ({results.get('compute_of', 'this run')}) | minutes |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in results["compute"].items()),
        *(f"| finalize of `{d}` | not run to its end |" for d in results["not_finalized"]),
    ]
    for device, r in results["devices"].items():
        card = ModelCard(r["card"])
        final = card.deployed
        acc = final["test_accuracy"]
        n = card.data["data_sizes"]["test"]
        lines += [
            "",
            f"## {device}: `{md_code(card.arch)[1:-1]}`",
            "",
            *(
                ["From an earlier run of this config (its own latency table and search).", ""]
                if r.get("earlier_run")
                else []
            ),
            f"Budget {r['budget']}; deployed {card.deployed_file} ({card.precision}): "
            f"**{acc * 100:.2f} % ± {accuracy_margin_pts(acc, n):.2f}** at **{final['latency_ms']:.3f} ms**. "
            f"Teacher: {card.data['teacher']}{_logits(card)}. Finalize's steps took "
            + ", ".join(f"{k} {v / 60:.1f}" for k, v in card.data["step_seconds"].items())
            + f" minutes: {sum(card.data['step_seconds'].values()) / 60:.1f} (each model step's time when it was "
            "made, reused or not).",
            *(["", _choice_line(r["choice"])] if "choice" in r else []),
            *(["", f"{card.data['qat_choice']['why']}."] if card.data.get("qat_choice") else []),
            "",
            "| stage | precision | size (MB) | latency (ms) | test accuracy |",
            "|---|---|---|---|---|",
            *(
                f"| {s['stage']} | {s['precision']} | {s['size_mb']:.3f} | {s['latency_ms']:.3f} | "
                f"{s['test_accuracy'] * 100:.2f} % |"
                for s in card.stage_rows()
            ),
            "",
            "Validation accuracy after each step: "
            + ", ".join(f"{k} {v * 100:.2f} %" for k, v in card.data["validation"].items())
            + ".",
        ]
        curve = card.data.get("distill_epochs")
        if curve:
            vals = ", ".join(f"{e['val_accuracy'] * 100:.2f}" for e in curve["epochs"])
            lines.append(f"Distillation, val accuracy (%) per epoch from 0: {vals}; kept epoch {curve['kept_epoch']}.")
    return "\n".join(lines) + "\n"


def _choice_line(choice: dict) -> str:
    c, m = choice["chosen"], choice["most_accurate"]
    line = (
        f"The search chose it at {c['supernet_accuracy'] * 100:.2f} % supernet accuracy, {c['predicted_ms']:.3f} ms "
        f"predicted"
    )
    if c["arch"] == m["arch"]:
        return line + ": the most accurate within the budget."
    return line + (
        f"; the most accurate within the budget, `{md_code(m['arch'])[1:-1]}`, "
        f"{m['supernet_accuracy'] * 100:.2f} % at {m['predicted_ms']:.3f} ms, leads by no more than search.tie_pts "
        f"({choice['tie_pts']:g} pt), so the slower arch is taken."
    )


def _logits(card: ModelCard) -> str:
    """How the teacher taught: from its clean logits once (the default), or on every augmented batch."""
    clean = card.teacher_logits == "clean"
    return " (its logits of the clean images, computed once)" if clean else " (run on every batch)"


if __name__ == "__main__":
    main()
