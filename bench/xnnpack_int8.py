"""XNNPACK int8 on full Fashion-MNIST: the headline arch finalized for an ExecuTorch device.

The headline run's finalize folder (``runs/fashion-mnist/finalize/cpu-mbv3s``, made by
``bench/deploy.py``) is copied, so its searched, distilled and pruned models are reused as
finalize's resumable steps reuse them (their inputs do not depend on the device); QAT runs
again in XNNPACK's own int8 scheme (``edgenas.quant.XnnpackQat``), every stage is exported
as an ExecuTorch program, timed by ExecuTorch (XNNPACK, 1 thread) and scored on the
official test split as ``edgenas predict`` runs it. What a user gets from
``devices: [{name: phone, lut: <an executorch table>}]`` after the headline run.

Target: ``qat_int8.pte`` within 0.5 point of ``pruned.pte`` (fp32) on test. Where int8 runs
slower than fp32, the placement of its nodes is printed (what the card's placement says).

    python bench/xnnpack_int8.py          # after bench/deploy.py; resumable
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from _setup import log

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.finalize import finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import make_backend
from edgenas.layout import ModelCard
from edgenas.nas import load_supernet, set_threads
from edgenas.reports import accuracy_margin_pts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--source", default="cpu-mbv3s", help="the headline run's device whose steps are reused")
    p.add_argument("--workdir", default="runs/bench_xnnpack")
    p.add_argument("--threads", type=int, default=0, help="torch threads for QAT (0: every core)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    set_threads(args.threads)
    config = load_config(args.config)
    source, out = config.layout.finalize(args.source), Path(args.workdir) / f"{args.source}-executorch"
    if not (source / "pruned.pt").exists():
        raise SystemExit(f"{source}/pruned.pt is missing: run bench/deploy.py first")
    out.mkdir(parents=True, exist_ok=True)
    for step in ("searched", "distilled", "pruned"):  # the model and its record: reused if the inputs match
        for suffix in (".pt", ".json"):
            if not (out / f"{step}{suffix}").exists():
                shutil.copy2(source / f"{step}{suffix}", out / f"{step}{suffix}")
    for extra in ("distill_epochs.json", "prune_steps.json"):
        if (source / extra).exists() and not (out / extra).exists():
            shutil.copy2(source / extra, out / extra)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    arch = space.parse(ModelCard.load(source / "model_card.json").arch)
    card = finalize_arch(
        arch,
        space=space,
        supernet=load_supernet(space, config.layout.supernet),
        splits=splits,
        backend=make_backend("executorch", threads=1),
        out_dir=out,
        config=dataclasses.replace(config.finalize, qat="always"),  # this bench is about the QAT int8 file
        device="executorch",
        augment=config.data.augmentations,
        data=pipeline.data_record(config),
    )
    summary = _summary(card)
    atomic_write_json(Path(args.out) / "xnnpack_int8.json", summary)
    atomic_write_text(Path(args.out) / "xnnpack_int8.md", _markdown(summary))
    print(_markdown(summary))


def _summary(card: dict) -> dict:
    by = {s["stage"]: s for s in card["stages"]}
    n = card["data_sizes"]["test"]
    fp32, qat, ptq = by["pruned"], by["qat_int8"], by["ptq_int8"]
    gap = (fp32["test_accuracy"] - qat["test_accuracy"]) * 100
    return {
        "arch": card["arch"],
        "runtime": card["deployed"]["runtime"],
        "cpu": card["device_fingerprint"]["cpu"],
        "stages": {k: {f: by[k][f] for f in ("file", "test_accuracy", "latency_ms", "size_mb")} for k in by},
        "margin_pts": accuracy_margin_pts(fp32["test_accuracy"], n),
        "qat_gap_pts": gap,
        "ptq_gap_pts": (fp32["test_accuracy"] - ptq["test_accuracy"]) * 100,
        "target_met": gap <= 0.5,
        "qat_epochs": card["qat_epochs"],
        "deployed": card["deployed"],
        "why": card["why"],
        "checks": card["checks"],
        "placement": {k: v["summary"] for k, v in (card.get("placement") or {}).items()},
    }


def _markdown(s: dict) -> str:
    lines = [
        "# XNNPACK int8 on Fashion-MNIST (ExecuTorch, the headline arch)",
        "",
        f"`python bench/xnnpack_int8.py` on {s['cpu']}, {s['runtime']} (XNNPACK, 1 thread, batch 1); arch "
        f"`{s['arch']}`; test accuracy on the official 10,000 images (± {s['margin_pts']:.2f} pt).",
        "",
        "| stage | file | test accuracy | latency (ms) | size (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in s["stages"].items():
        lines.append(
            f"| {name} | {r['file']} | {r['test_accuracy'] * 100:.2f} % | {r['latency_ms']:.3f} | {r['size_mb']:.3f} |"
        )
    met = "met" if s["target_met"] else "**not met**"
    lines += [
        "",
        f"QAT int8 (XNNPACK's scheme) vs fp32: {-s['qat_gap_pts']:+.2f} pt (target: within 0.5 pt: {met}); "
        f"PTQ int8: {-s['ptq_gap_pts']:+.2f} pt. Deployed: {s['deployed']['file']} ({s['why']}).",
    ]
    for stage, p in s["placement"].items():
        executors = ", ".join(f"{k}: {v['nodes']}" for k, v in p["by_executor"].items())
        outside = sorted({f.split("(")[1].split(",")[0] for f in p["fallbacks"]})
        lines.append(f"- {stage}: instructions by executor: {executors}; outside XNNPACK: {', '.join(outside)}")
    log(f"QAT gap {s['qat_gap_pts']:.2f} pt")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
