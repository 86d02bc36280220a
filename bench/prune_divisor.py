"""Pruning to the runtime's channel block: time saved per parameter removed, divisor 8 against the block.

`finalize.prune.divisor: auto` rounds pruned channel counts to the channel block the device's
table found its runtime computing in (`Predictor.channel_pricing.block`: 16 for ONNX Runtime
on AVX-512, 8 on AVX2), where counts between two multiples of it run as slow as the next one.
This bench prunes archs spread over the table's latency range (fresh weights, L1, one step
of 20 % and of 30 % of the channels, no finetune: latency does not depend on the weights)
with divisor 8 and with the block, exports each as finalize does and times every file in
interleaved batches on this CPU (ONNX Runtime, 1 thread, batch 1; the median of 3 batches).

    python bench/prune_divisor.py          # ~1 minute with the table built

Results: bench/results/prune_divisor.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _setup import bench_predictor, log

from edgenas.config import PruneConfig
from edgenas.export import export_onnx
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LocalBackend, Protocol, reference_model
from edgenas.latency_tables._validate import sample_spread
from edgenas.pruning import progressive_prune
from edgenas.search_spaces import build_subnet, get_space

SHARES = (0.2, 0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10, help="archs, spread over the predicted latency range")
    p.add_argument(
        "--lut",
        default="runs/bench_lut/small_r28_fp32_t1.json",
        help="this CPU's fp32 table of `small` at 28 px, as bench/lut_accuracy.py builds it (built here if missing)",
    )
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    backend = LocalBackend(threads=1)
    predictor = bench_predictor(get_space("small"), Path(args.lut), backend, resolutions=(28,))
    space = predictor.space
    block = PruneConfig().resolved(predictor.channel_pricing.block).divisor
    divisors = sorted({8, block})
    archs = sample_spread(predictor, args.n, np.random.default_rng(1))
    models, rows = [], []
    for arch in archs:
        torch.manual_seed(0)
        net = build_subnet(space, arch).eval()
        shape = (1, space.in_chs, arch.resolution, arch.resolution)
        params = sum(t.numel() for t in net.parameters())
        models.append(export_onnx(net, shape))
        rows.append({"arch": str(arch), "kind": "unpruned", "params_ratio": 1.0})
        for share in SHARES:
            for divisor in divisors:
                config = PruneConfig(step=share, max_steps=1, divisor=divisor, tolerance=1.0)
                pruned, _ = progressive_prune(
                    net, torch.zeros(shape), config, finetune=lambda m: None, evaluate=lambda m: 1.0
                )
                models.append(export_onnx(pruned, shape))
                kept = sum(t.numel() for t in pruned.parameters()) / params
                rows.append({"arch": str(arch), "kind": f"{share:.0%}/{divisor}", "params_ratio": kept})
    log(f"{len(models)} files; block {block} (table: {predictor.channel_pricing.describe()})")
    timed = [backend.measure(models, reference_model("fp32"), Protocol(rounds=20))[0] for _ in range(args.batches)]
    for i, row in enumerate(rows):
        row["ms"] = float(np.median([t[i].ms for t in timed]))
    full = {r["arch"]: r["ms"] for r in rows if r["kind"] == "unpruned"}
    for r in rows:
        r["latency_ratio"] = r["ms"] / full[r["arch"]]
    summary = {}
    for kind in dict.fromkeys(r["kind"] for r in rows if r["kind"] != "unpruned"):
        rs = [r for r in rows if r["kind"] == kind]
        saved = [(1 - r["latency_ratio"]) / (1 - r["params_ratio"]) for r in rs]
        summary[kind] = {
            "latency_ratio": float(np.mean([r["latency_ratio"] for r in rs])),
            "params_ratio": float(np.mean([r["params_ratio"] for r in rs])),
            "time_saved_per_param_removed": float(np.mean(saved)),
        }
    cpu = backend.fingerprint()["cpu"]
    out = Path(args.out)
    atomic_write_json(out / "prune_divisor.json", {"cpu": cpu, "block": block, "summary": summary, "rows": rows})
    md = _markdown(cpu, block, predictor.channel_pricing.describe(), summary, args)
    atomic_write_text(out / "prune_divisor.md", md)
    print(md)


def _markdown(cpu: str, block: int, pricing: str, summary: dict, args: argparse.Namespace) -> str:
    return (
        "\n".join(
            [
                "# Pruning to the runtime's channel block",
                "",
                f"`python bench/prune_divisor.py --n {args.n}`: {args.n} archs of `small` at 28 "
                f"px spread over this CPU's fp32 table ({cpu}; its pricing: {pricing}), each pruned once by a share of "
                "its channels (fresh weights, L1) with divisor 8 and with the table's block, every file timed in "
                f"{args.batches} interleaved batches (ONNX Runtime, 1 thread, batch 1; medians). Means over the archs:",
                "",
                "| pruned share / divisor | latency vs unpruned | parameters vs unpruned "
                "| time saved per parameter removed |",
                "|---|---|---|---|",
                *(
                    f"| {k} | {s['latency_ratio']:.3f} | {s['params_ratio']:.3f} "
                    f"| {s['time_saved_per_param_removed']:.2f} |"
                    for k, s in summary.items()
                ),
                "",
                f"`finalize.prune.divisor: auto` prunes to {block} on this CPU.",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
