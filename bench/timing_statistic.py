"""Does the table's timing protocol read a file as a user's timing does? Per file, relative to the reference.

A table times models in short interleaved turns (``Protocol``); a user times one file in a loop. Both
are taken relative to the same reference model, so their ratio per file should be 1 whatever the
machine's speed. ``--n`` random archs of ``small`` at 28 px (fresh weights, the runtime's own format)
are timed three ways in one process: the protocol as tables used it before turns began with an untimed
run (``turn_warmup`` 0), the protocol of today (1), and plainly (each file in 20 round-robin turns of
50 ms, the median call of each turn, then their median: ``bench/lut_accuracy.py``'s unseen check).
Printed and written to ``bench/results/timing_statistic<device>.{json,md}``: per protocol, the
spread of (plain / protocol) over the files.

    python bench/timing_statistic.py --device executorch   # ~3 minutes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _setup import bench_space, device_tag, md_code
from lut_accuracy import plain_timings

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import Protocol, arch_model, make_runtime, noop_for, reference_model, time_models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="local-cpu", help="local-cpu (ONNX Runtime), openvino, executorch, ncnn")
    p.add_argument("--n", type=int, default=16, help="random archs of small at 28 px")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    runtime = make_runtime(args.device, threads=1)
    space = bench_space("28")
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    files = [arch_model(space, a, "fp32", runtime.format) for a in archs]
    ref = reference_model("fp32", runtime.format)
    rel = {}
    for warm in (0, 1):
        timings, _, _ = time_models(
            files, ref, runtime=runtime, protocol=Protocol(turn_warmup=warm), noop=noop_for(runtime.format)
        )
        rel[f"protocol, turn_warmup {warm}"] = [t.rel for t in timings]
    ref_plain, *plain = plain_timings([runtime.load(f) for f in [ref, *files]])
    rel["plain"] = [t["median_ms"] / ref_plain["median_ms"] for t in plain]

    summary = {}
    for name in (k for k in rel if k != "plain"):
        ratio = np.array(rel["plain"]) / np.array(rel[name])
        summary[name] = {
            "median": float(np.median(ratio)),
            "min": float(ratio.min()),
            "max": float(ratio.max()),
            "within_5pct": float(np.mean(np.abs(ratio - 1) <= 0.05)),
        }
    rows = [{"arch": str(a), **{k: v[i] for k, v in rel.items()}} for i, a in enumerate(archs)]
    result = {"device": args.device, "runtime": f"{runtime.name} {runtime.version()}", "summary": summary, "rows": rows}
    md = [
        f"`python bench/timing_statistic.py --device {args.device}` ({result['runtime']}, 1 thread): "
        f"{args.n} random archs of `small` @ 28, each file's time relative to the reference model, "
        "timed plainly (a user's loop) over timed by the table's protocol, in one process.",
        "",
        "| protocol | plain / protocol: median | min | max | files within ±5 % |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        md.append(f"| {name} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} | {s['within_5pct']:.0%} |")
    md += ["", "| arch | " + " | ".join(rel) + " |", "|---|" + "---|" * len(rel)]
    for r in rows:
        md.append(f"| {md_code(r['arch'])} | " + " | ".join(f"{r[k]:.3f}" for k in rel) + " |")
    out = Path(args.out)
    stem = f"timing_statistic{device_tag(args.device)}"
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md[: 4 + len(summary)]))


if __name__ == "__main__":
    main()
