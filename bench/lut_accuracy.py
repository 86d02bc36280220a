"""How well latency tables predict end-to-end latency on this machine, and what they cost.

For each (space, resolution) and precision: build the table for that resolution (every
width), validate it on ``--n`` subnets spread over the latency range (half fit the
calibration, half are held out), and print the held-out figures, the build time and the
predictor's speed. Results go to ``bench/results/lut_accuracy.{json,md}``.

    python bench/lut_accuracy.py                      # mbv3 @160 and small @28, fp32 and int8
    python bench/lut_accuracy.py --cases mbv3:224 --precisions fp32 --n 80
    python bench/lut_accuracy.py --device openvino:CPU   # the same with OpenVINO: lut_accuracy_openvino.*
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LatencyTable, Predictor, build_table, make_backend, validate_table
from edgenas.search_spaces import get_space


def predictor_speed(table_path: Path, resolution: int, n: int = 20000) -> float:
    predictor = Predictor(LatencyTable.load(table_path))
    rng = np.random.default_rng(0)
    archs = []
    while len(archs) < n:
        a = predictor.space.sample(rng)
        if a.resolution == resolution:
            archs.append(a)
    start = time.perf_counter()
    for a in archs:
        predictor.predict(a)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="mbv3:160,small:28", help="space:resolution pairs")
    p.add_argument("--precisions", default="fp32,int8")
    p.add_argument("--n", type=int, default=80, help="validation subnets (half held out)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="local-cpu", help="local-cpu (ONNX Runtime) or openvino[:CPU|GPU|NPU]")
    p.add_argument("--workdir", default="runs/bench_lut", help="where tables are kept (resumable)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work, out = Path(args.workdir), Path(args.out)
    backend = make_backend(args.device, threads=args.threads)
    tag = "" if args.device == "local-cpu" else "_" + args.device.replace(":", "_").lower()
    results = []
    for case in args.cases.split(","):
        space_name, res = case.split(":")
        space = get_space(space_name)
        for precision in args.precisions.split(","):
            path = work / f"{space_name}_r{res}_{precision}_t{args.threads}{tag}.json"
            started = time.time()
            table = build_table(space, backend, path, device=args.device, precision=precision, resolutions=[int(res)])
            build_wall = time.time() - started
            report = validate_table(path, backend, n=args.n, resolutions=[int(res)])
            speed = predictor_speed(path, int(res))
            row = {
                "space": space_name,
                "resolution": int(res),
                "precision": precision,
                "threads": args.threads,
                "entries": len(table.entries),
                "build_seconds": table.header["build_seconds"],
                "build_wall_seconds_this_run": build_wall,
                "drift": table.header.get("drift"),
                "reference_ms": table.header["reference_ms"],
                "latency_range_ms": [
                    min(r["measured_ms"] for r in report["rows"]),
                    max(r["measured_ms"] for r in report["rows"]),
                ],
                "calibration": report["calibration"],
                "heldout": report["heldout"],
                "heldout_uncalibrated": report["heldout_uncalibrated"],
                "heldout_raw_ms": report["heldout_raw_ms"],
                "validate_seconds": report["seconds"],
                "predictions_per_second": speed,
                "cpu": table.header["cpu"],
                "runtime": table.header["runtime"],
                "device": args.device,
                "onnxruntime": table.header["onnxruntime"],
            }
            results.append(row)
            m = row["heldout"]
            print(
                f"{space_name}@{res} {precision}: {m['n']} held-out, within5 {m['within_5pct']:.0%} "
                f"within10 {m['within_10pct']:.0%} MAPE {m['mape_pct']:.1f}% tau {m['kendall_tau']:.3f} | "
                f"build {row['build_seconds']:.0f}s, {speed:,.0f} predictions/s",
                flush=True,
            )

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"lut_accuracy{tag}.json", results)
    lines = [
        "| space @ res | precision | held-out | within ±5 % | within ±10 % | MAPE | Kendall τ | uncalibrated MAPE "
        "| raw-ms MAPE | latency range (ms) | entries | build (s) | predictions/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, u, raw = r["heldout"], r["heldout_uncalibrated"], r["heldout_raw_ms"]
        lo, hi = r["latency_range_ms"]
        lines.append(
            f"| {r['space']} @ {r['resolution']} | {r['precision']} | {m['n']} | {m['within_5pct']:.0%} "
            f"| {m['within_10pct']:.0%} | {m['mape_pct']:.1f} % | {m['kendall_tau']:.3f} | {u['mape_pct']:.1f} % "
            f"| {raw['mape_pct']:.1f} % | {lo:.2f}-{hi:.2f} | {r['entries']} | {r['build_seconds']:.0f} "
            f"| {r['predictions_per_second']:,.0f} |"
        )
    table_md = "\n".join(lines) + "\n"
    atomic_write_text(
        out / f"lut_accuracy{tag}.md",
        f"{results[0]['runtime']} on {results[0]['cpu']}, "
        f"{args.threads} thread(s), `python bench/lut_accuracy.py --device {args.device}`\n\n" + table_md,
    )
    print(table_md)
    print(json.dumps({"cpu": results[0]["cpu"], "runtime": results[0]["runtime"]}))


if __name__ == "__main__":
    main()
