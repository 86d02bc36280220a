"""Is the largest archs' extra time stable? The same files timed several ways, against their blocks' sum.

The space's largest arch runs well over the sum of its blocks alone where its weights outgrow
the cache (bench/network_vs_blocks.py). Whether a calibration could learn that depends on
whether it holds still: here the largest arch, one near it, an arch of a few MB and the
smallest are timed, in units of the table's reference model timed beside them,

- as a user times a file: back-to-back runs in turns of ``--long-turn-ms`` (round-robin over
  the files, the median call per turn, then over ``--rounds`` turns);
- the same with short turns (``--short-turn-ms``, as the table's protocol takes them);
- with the table's own protocol, in ``--batches`` consecutive batches;
- with that protocol changed where it matters here: ``--untimed`` untimed runs at the start of
  every turn instead of the table's, or turns of ``--long-protocol-turn-ms``;

and set against the table's raw sum of blocks. An arch whose ratio moves from one way or one
batch to the next by more than the prediction's ±10 % cannot be calibrated on this machine.

    python bench/cache_cliff.py                      # fp32, ONNX Runtime, the r28 table of bench/lut_accuracy.py
    python bench/cache_cliff.py --precision int8 --table runs/bench_lut/small_r28_int8_t1.json
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

from _setup import log, md_code
from lut_accuracy import plain_timings

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import (
    LatencyTable,
    Predictor,
    Protocol,
    arch_model,
    make_backend,
    make_runtime,
    noop_for,
    reference_model,
)
from edgenas.search_spaces import Arch, model_bytes

ARCHS = (
    "r28|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se",  # the largest
    "r28|k7e6-k7e6se-k7e6se|k5e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se",  # near it
    "r28|k7e6se|k5e4se-k3e3|k5e3-k7e6se-k3e3|k3e4se",
    "r28w0.5|k3e3|k3e3|k3e3|k3e3",  # the smallest
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="runs/bench_lut/small_r28_fp32_t1.json", help="a table of the `small` space")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--long-turn-ms", type=float, default=50.0)
    p.add_argument("--short-turn-ms", type=float, default=3.0)
    p.add_argument("--batches", type=int, default=3, help="consecutive batches with the table's protocol")
    p.add_argument("--untimed", type=int, default=3, help="untimed runs per turn of the changed protocol")
    p.add_argument("--long-protocol-turn-ms", type=float, default=15.0, help="turns of the other changed protocol")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    table = LatencyTable.load(args.table)
    if table.header["precision"] != args.precision:
        raise SystemExit(f"--table is a {table.header['precision']} table; --precision is {args.precision}")
    predictor = Predictor(table)
    space = predictor.space
    archs = [space.validate(Arch.parse(a)) for a in ARCHS]
    files = [arch_model(space, a, args.precision) for a in archs]
    reference = reference_model(args.precision)
    runtime = make_runtime("local-cpu", threads=1)
    ways: dict[str, list[float]] = {}  # way -> each arch's time / reference
    for name, turn_ms in (("plain, long turns", args.long_turn_ms), ("plain, short turns", args.short_turn_ms)):
        ref, *timed = plain_timings([runtime.load(f) for f in [reference, *files]], args.rounds, turn_ms / 1000)
        way = f"{name} ({turn_ms:g} ms)"
        ways[way] = [t["median_ms"] / ref["median_ms"] for t in timed]
        log(f"{way}: " + " ".join(f"{r:.3f}" for r in ways[way]))
    backend, protocol = make_backend("local-cpu", threads=1), Protocol(**table.header["protocol"])
    variants = [(f"table protocol, batch {b + 1}", protocol) for b in range(args.batches)]
    variants += [
        (f"{args.untimed} untimed runs a turn", dataclasses.replace(protocol, turn_warmup=args.untimed)),
        (
            f"turns of {args.long_protocol_turn_ms:g} ms",
            dataclasses.replace(protocol, turn_ms=args.long_protocol_turn_ms),
        ),
    ]
    for name, variant in variants:
        timings, _, _ = backend.measure(files, reference, variant, noop_for("onnx"))
        ways[name] = [t.rel for t in timings]
        log(f"{name}: " + " ".join(f"{t.rel:.3f}" for t in timings))
    rows = [
        {
            "arch": str(a),
            "weights_mb": model_bytes(space.block_specs(a), args.precision) / 1e6,
            "blocks_sum": predictor.features(a)["t"],
            "timed": {way: r[i] for way, r in ways.items()},
        }
        for i, a in enumerate(archs)
    ]
    result = {"settings": vars(args), "cpu": platform.processor() or platform.machine(), "rows": rows}
    result["measured"] = time.strftime("%Y-%m-%d %H:%M")
    stem = Path(args.out) / f"cache_cliff_{args.precision}"
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), markdown(args, rows, list(ways)))
    print(markdown(args, rows, list(ways)))


def markdown(args, rows: list[dict], ways: list[str]) -> str:
    md = [
        f"# One file timed several ways, against its blocks' sum ({args.precision}, ONNX Runtime, 1 thread)",
        "",
        f"`python bench/cache_cliff.py --precision {args.precision} --table {args.table}`; each cell: the network's "
        "time in units of the reference model timed beside it, and its ratio to the table's raw sum of blocks.",
        "",
        "| arch | weights (MB) | blocks' sum | " + " | ".join(ways) + " |",
        "|---|---|---|" + "---|" * len(ways),
    ]
    for r in rows:
        cells = " | ".join(f"{r['timed'][w]:.3f} ({r['timed'][w] / r['blocks_sum']:.2f}x)" for w in ways)
        md.append(f"| {md_code(r['arch'])} | {r['weights_mb']:.1f} | {r['blocks_sum']:.3f} | {cells} |")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
