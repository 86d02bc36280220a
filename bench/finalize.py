"""Finalize benchmark on Fashion-MNIST: the stage table for two latency budgets, QAT vs PTQ, int8 vs fp32.

Reuses the supernet, latency table and NSGA-II Pareto set of ``bench/search.py`` (run it
first; same ``--workdir``). For each budget (the predicted latency of a front arch at a
given position), the most accurate Pareto arch within it is finalized: distillation finetune, progressive
pruning, QAT, exports, checks and measurement on this CPU; then QAT and PTQ again at other
seeds on the same pruned models (``--qat-seeds``). Results go to
``bench/results/finalize.{json,md}``.

    python bench/finalize.py
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from _setup import bench_space, bench_splits, md_code

from edgenas.finalize import FinalizeConfig, finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LatencyTable, LocalBackend, Predictor
from edgenas.nas import load_supernet, set_threads
from edgenas.pruning import PruneConfig


def int8_ceiling(fp32_onnx: Path) -> float:
    """fp32 parameter bytes / (1 byte per weight + 4 per bias): the best size ratio 8-bit weights can reach."""
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(fp32_onnx)).graph.initializer]
    weights = sum(a.size for a in arrays if a.ndim > 1)
    biases = sum(a.size for a in arrays if a.ndim <= 1)
    return 4 * (weights + biases) / (weights + 4 * biases)


def arch_dir(arch: str) -> str:
    return arch.replace("|", "_").replace(".", "p")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/bench_search")
    p.add_argument(
        "--positions",
        default="0.3,1.0",
        help="budgets: the predicted latency of the front arch at these positions (0: fastest, "
        "1: most accurate) of the latency-sorted NSGA-II front",
    )
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--resolutions", default="24,28")
    p.add_argument("--distill-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-lr", type=float, default=0.0005)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--qat-seeds",
        default="1,2",
        help="QAT and PTQ again with these seeds on each arch's pruned model (seed 0 is the main run): "
        "how QAT vs PTQ varies with calibration batches and data order; '' to skip",
    )
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work = Path(args.workdir)
    set_threads(args.threads)
    space = bench_space(args.resolutions)
    splits = bench_splits(args.train_limit)
    supernet = load_supernet(space, work / "supernet.pt")
    predictor = Predictor(LatencyTable.load(work / "lut_small_fp32.json"), space)
    front = read_json(work / "search_nsga2" / "pareto.json")["pareto"]
    key = "latency_ms:cpu-fp32"
    front = sorted(front, key=lambda r: r[key])
    config = FinalizeConfig(
        distill_epochs=args.distill_epochs,
        lr=0.01,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        prune=PruneConfig(step=0.1, max_steps=4, divisor=8, tolerance=0.01),
    )
    backend = LocalBackend(threads=1)
    results = []
    for share in (float(s) for s in args.positions.split(",")):
        budget = front[round(share * (len(front) - 1))][key]
        arch = max((r for r in front if r[key] <= budget), key=lambda r: r["accuracy"])["arch"]
        start = time.time()
        card = finalize_arch(
            space.parse(arch),
            space=space,
            supernet=supernet,
            splits=splits,
            backend=backend,
            out_dir=work / f"finalize_{arch_dir(arch)}",
            config=config,
            predictor=predictor,
            device="local-cpu",
            progress=False,
        )
        print(f"budget {budget:.3f} ms: {arch} finalized in {time.time() - start:.0f} s", flush=True)
        results.append({"budget_ms": budget, "share": share, "card": card})

    md = []
    for r in results:
        card = r["card"]
        by = {s["stage"]: s for s in card["stages"]}
        qat, ptq, fp32, dist, teacher = by["qat_int8"], by["ptq_int8"], by["pruned"], by["distilled"], by["teacher"]
        r["targets"] = {
            "int8_within_1pt_of_distilled": (dist["test_accuracy"] - qat["test_accuracy"]) * 100 <= 1.0,
            "qat_ge_ptq": qat["test_accuracy"] >= ptq["test_accuracy"],
            "int8_vs_own_fp32_size_x": fp32["size_mb"] / qat["size_mb"],
            "int8_size_ceiling_x": int8_ceiling(work / f"finalize_{arch_dir(card['arch'])}" / "pruned.onnx"),
            "int8_vs_distilled_fp32_size_x": dist["size_mb"] / qat["size_mb"],
            "int8_vs_teacher_size_x": teacher["size_mb"] / qat["size_mb"],
        }
        md += [
            f"### Budget {r['budget_ms']:.3f} ms (predicted): `{card['arch']}`",
            "",
            "| stage | precision | size (MB) | latency (ms) | peak memory (MB) | test accuracy | size vs teacher "
            "| speed-up vs teacher | memory vs teacher |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in card["stages"]:
            md.append(
                f"| {s['stage']} | {s['precision']} | {s['size_mb']:.3f} | {s['latency_ms']:.3f} | "
                f"{s['peak_memory_mb']:.1f} | {s['test_accuracy'] * 100:.2f} % | "
                f"{s['size_vs_teacher_pct']:+.0f} % | {s['speedup_vs_teacher']:.2f}x | "
                f"{s['memory_vs_teacher_pct']:+.0f} % |"
            )
        t = r["targets"]
        md += [
            "",
            f"- deploy: {card['chosen_model']} ({card['chosen_precision']}): {card['why']}",
            f"- QAT int8 {qat['test_accuracy'] * 100:.2f} % vs PTQ int8 {ptq['test_accuracy'] * 100:.2f} % vs "
            f"distilled fp32 {dist['test_accuracy'] * 100:.2f} % (int8 within 1 pt: "
            f"{'yes' if t['int8_within_1pt_of_distilled'] else 'no'}; "
            f"QAT >= PTQ: {'yes' if t['qat_ge_ptq'] else 'no'})",
            f"- int8 model {t['int8_vs_own_fp32_size_x']:.2f}x smaller than the same pruned model in fp32 (the "
            f"most 8-bit weights can give it: {t['int8_size_ceiling_x']:.2f}x, as biases stay 32-bit), "
            f"{t['int8_vs_distilled_fp32_size_x']:.1f}x smaller than the searched arch in fp32 (distilled, "
            f"before pruning), {t['int8_vs_teacher_size_x']:.1f}x smaller than the teacher",
            f"- int8 (QAT) vs fp32 measured latency: {qat['latency_ms']:.3f} vs {fp32['latency_ms']:.3f} ms",
            f"- int8 ONNX vs fake-quant torch top-1 agreement: "
            f"{card['checks']['int8_vs_fake_quant']['top1_agreement'] * 100:.1f} %",
            "",
        ]
    # QAT vs PTQ at other seeds, on the same pruned models (distillation and pruning reused)
    seeds = [int(x) for x in args.qat_seeds.split(",") if x.strip()]
    if seeds:
        md += [
            "#### QAT vs PTQ at other seeds (same pruned models)",
            "",
            "| arch | seed | QAT int8 | PTQ int8 | QAT - PTQ (pt) | QAT epoch kept | val accuracy by QAT epoch |",
            "|---|---|---|---|---|---|---|",
        ]
    for r in results if seeds else []:
        arch = r["card"]["arch"]
        src = work / f"finalize_{arch_dir(arch)}"
        r["qat_seeds"] = []
        for seed in [0, *seeds]:
            if seed == 0:
                card = r["card"]
            else:
                dst = work / f"finalize_{arch_dir(arch)}_seed{seed}"
                dst.mkdir(exist_ok=True)
                for name in ("searched.pt", "distilled.pt", "pruned.pt", "prune_steps.json"):
                    if not (dst / name).exists():
                        shutil.copy(src / name, dst / name)
                card = finalize_arch(
                    space.parse(arch),
                    space=space,
                    supernet=supernet,
                    splits=splits,
                    backend=backend,
                    out_dir=dst,
                    config=dataclasses.replace(config, seed=seed, measure_rounds=5),
                    predictor=predictor,
                    device="local-cpu",
                    progress=False,
                )
            by = {s["stage"]: s for s in card["stages"]}
            q, pt = by["qat_int8"]["test_accuracy"], by["ptq_int8"]["test_accuracy"]
            r["qat_seeds"].append({"seed": seed, "qat": q, "ptq": pt, "qat_epochs": card["qat_epochs"]})
            vals = ", ".join(f"{e['val_accuracy'] * 100:.2f}" for e in card["qat_epochs"]["epochs"])
            md.append(
                f"| {md_code(arch)} | {seed} | {q * 100:.2f} % | {pt * 100:.2f} % | {(q - pt) * 100:+.2f} | "
                f"{card['qat_epochs']['kept_epoch']} | {vals} |"
            )
    out = Path(args.out)
    atomic_write_json(out / "finalize.json", results)
    atomic_write_text(out / "finalize.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
