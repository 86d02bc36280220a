"""From the full-Fashion-MNIST supernet to a deployed model at <= 1/3 of the largest subnet's latency.

Takes the supernet of ``bench/supernet.py`` and an fp32 table of this CPU (the one
``bench/ranking.py`` builds, or built here), searches it (the default sampler and
evaluation, ``--trials``) with a
budget of ``--share`` x the largest subnet's predicted latency, and finalizes the most
accurate arch within it on the full training split: distillation from the largest subnet,
progressive pruning, QAT, fp32 / int8 exports, every stage timed in one interleaved batch
on this CPU. The largest subnet is the teacher, so its measured latency is in the same
table. Target: a model at <= 1/3 of the largest's measured latency with >= 91 % test
accuracy; int8 and fp32 rows both reported. Results: bench/results/deploy.{json,md}.

    python bench/deploy.py                 # after bench/supernet.py; ~35 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _setup import LUT_FP32, add_supernet_args, bench_predictor, log, md_code, supernet_bench

from edgenas.accelerator import Accelerator
from edgenas.data import resolve_augment
from edgenas.finalize import FinalizeConfig, finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LocalBackend
from edgenas.nas import (
    DeviceObjective,
    SearchConfig,
    SubnetEvaluator,
    device_front,
    pareto_rows,
    run_search,
)
from edgenas.pruning import PruneConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--share", type=float, default=1 / 3, help="budget: this share of the largest's predicted latency")
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--distill-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--lut", default=LUT_FP32, help="built and validated here if missing")
    p.add_argument("--device", default="auto")
    add_supernet_args(p, workdir="runs/bench_deploy")
    args = p.parse_args()

    work, out = Path(args.workdir), Path(args.out)
    space, splits, supernet = supernet_bench(args)
    backend = LocalBackend(threads=1)
    predictor = bench_predictor(space, Path(args.lut), backend)
    budget = args.share * predictor.predict(space.largest())
    log(f"budget {budget:.3f} ms ({args.share:.2f} x the largest's predicted latency)")

    accel = Accelerator.create(args.device)
    config = SearchConfig(n_trials=args.trials, device=args.device)
    evaluator = SubnetEvaluator(
        supernet, splits, calib_batches=config.calib_batches, images=config.val_images, seed=0, accel=accel
    )
    device = DeviceObjective("cpu-fp32", predictor, budget)
    study = run_search(space, evaluator, [device], config, work / "search", progress=False)
    rows, _ = pareto_rows(study)
    front = device_front(rows, device.name)
    arch = max(front, key=lambda r: r["accuracy"])["arch"]
    log(f"search: {len(rows)} trials, {len(front)} on the front within budget; most accurate {arch}")

    fin = FinalizeConfig(
        distill_epochs=args.distill_epochs,
        qat_epochs=args.qat_epochs,
        device=args.device,
        prune=PruneConfig(step=0.1, max_steps=4, divisor=8, tolerance=0.005),
    )
    start = time.time()
    card = finalize_arch(
        space.parse(arch),
        space=space,
        supernet=supernet,
        splits=splits,
        backend=backend,
        out_dir=work / "finalize",
        config=fin,
        predictor=predictor,
        device="local-cpu",
        augment=resolve_augment("auto", "fashion-mnist"),
        progress=False,
    )
    by = {s["stage"]: s for s in card["stages"]}
    largest_ms = by["teacher"]["latency_ms"]
    verdicts = {}
    for stage in ("pruned", "qat_int8", "ptq_int8"):
        s = by[stage]
        verdicts[stage] = {
            "latency_vs_largest": s["latency_ms"] / largest_ms,
            "test_accuracy": s["test_accuracy"],
            "met": s["latency_ms"] <= largest_ms / 3 and s["test_accuracy"] >= 0.91,
        }
    results = {
        "settings": vars(args),
        "budget_ms": budget,
        "arch": arch,
        "card": card,
        "verdicts": verdicts,
        "finalize_seconds": time.time() - start,
        "trials": len(rows),
    }
    atomic_write_json(out / "deploy.json", results)
    md = [
        f"# Deployed from the full-Fashion-MNIST supernet: `{md_code(arch)[1:-1]}`",
        "",
        f"`python bench/deploy.py`: budget {budget:.3f} ms predicted ({args.share:.2f} x the largest subnet), "
        f"{config.sampler} sampler, {len(rows)} trials, finalize on {splits.describe()['train']:,} images "
        f"({args.distill_epochs} distillation epochs from the largest subnet, pruning steps of 10 %, "
        f"{args.qat_epochs} QAT epochs); "
        "every stage timed in one interleaved batch on this CPU (1 thread, batch 1), test accuracy on the "
        "official 10,000 images (int8 rows in ONNX Runtime).",
        "",
        "| stage | precision | size (MB) | latency (ms) | vs largest | test accuracy | RAM kB (predicted) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in card["stages"]:
        md.append(
            f"| {s['stage']} | {s['precision']} | {s['size_mb']:.3f} | {s['latency_ms']:.3f} | "
            f"{s['latency_ms'] / largest_ms:.2f}x | {s['test_accuracy'] * 100:.2f} % | "
            f"{s['activation_kb']:.1f} ({s['predicted_activation_kb']:.1f}) |"
        )
    md += [
        "",
        "Target (<= 1/3 of the largest's measured latency and >= 91 % test): "
        + ", ".join(
            f"{k} {'met' if v['met'] else 'not met'} ({v['latency_vs_largest']:.2f}x, {v['test_accuracy'] * 100:.2f} %)"
            for k, v in verdicts.items()
        )
        + ".",
    ]
    atomic_write_text(out / "deploy.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
