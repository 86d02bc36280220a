"""How a runtime charges for a pruned classifier: classifiers timed alone at a grid of input and hidden widths
against the table's estimates.

Pruning narrows the classifier's hidden layer, which no arch of a space varies; a table times each
classifier at three pruned hidden widths besides (``edgenas.latency_tables.table_specs``) and prices a
pruned one from them (``Predictor.predict_specs``). This bench times classifiers of the table's shape
at input widths x hidden widths no table entry has (multiples of 8, as pruning keeps), in one batch with
the table's protocol beside its reference model, and compares each with its estimate, in units of the
reference model, beside the estimate a line through the space's own classifiers alone gives (the table
without its probes: the pricing before tables timed them).

    python bench/classifier_widths.py --device executorch --lut runs/bench_lut/small_r28_fp32_t1_executorch.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from _setup import log

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import (
    LatencyTable,
    Predictor,
    Protocol,
    block_model,
    make_backend,
    noop_for,
    reference_model,
    table_specs,
)
from edgenas.search_spaces import BlockSpec

INPUTS = (200, 296, 400, 512)
HIDDEN = (512, 648, 656, 704, 712, 720, 760, 816, 920)


def without_probes(table: LatencyTable) -> LatencyTable:
    """The table as it was before it timed its classifiers' probes."""
    space = Predictor(table).space
    probes = {s.key for s in table_specs(space)} - {s.key for s in space.all_block_specs()}
    return dataclasses.replace(table, entries={k: e for k, e in table.entries.items() if k not in probes})


def estimate(predictor: Predictor, spec: BlockSpec) -> float:
    """A block's estimated cost alone, in units of the reference model (the per-call cost excluded)."""
    return predictor.predict_specs([spec], calibrated=False) / predictor.reference_ms - predictor.noop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="local-cpu")
    p.add_argument("--lut", required=True, help="a finished table of the small space on this device")
    p.add_argument("--inputs", default=",".join(map(str, INPUTS)))
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    table = LatencyTable.load(args.lut)
    predictor, before = Predictor(table), Predictor(without_probes(table))
    head = next(BlockSpec.from_key(k) for k in sorted(table.entries) if k.startswith("classifier"))
    specs = [
        dataclasses.replace(head, in_chs=i, mid_chs=m)
        for i in map(int, args.inputs.split(","))
        for m in map(int, args.hidden.split(","))
    ]
    backend = make_backend(args.device, threads=table.header["threads"])
    precision, fmt = table.header["precision"], backend.format
    log(f"{len(specs)} classifiers ({head.in_size} px input) on {args.device} {precision}")
    timings, _, _ = backend.measure(
        [block_model(s, precision, fmt) for s in specs],
        reference_model(precision, fmt),
        Protocol(**table.header["protocol"]),
        noop_for(fmt),
    )
    rows = []
    for spec, t in zip(specs, timings):
        measured = t.rel - predictor.noop
        rows.append(
            {
                "in": spec.in_chs,
                "hidden": spec.mid_chs,
                "measured": measured,
                "estimate": estimate(predictor, spec),
                "estimate_before": estimate(before, spec),
            }
        )
    err = {k: np.array([r[k] / r["measured"] - 1 for r in rows]) for k in ("estimate", "estimate_before")}
    summary = {
        k: {"mean_abs_error": float(np.mean(np.abs(e))), "within_10pct": float(np.mean(np.abs(e) <= 0.10))}
        for k, e in err.items()
    }
    name = f"classifier_widths_{Path(args.lut).stem}"
    settings = {**vars(args), "pricing": predictor.channel_pricing.describe(), "runtime": table.header["runtime"]}
    atomic_write_json(Path(args.out) / f"{name}.json", {"settings": settings, "summary": summary, "rows": rows})
    lines = [
        f"# Pruned classifiers vs their estimates ({args.device}, {precision}, `{Path(args.lut).name}`)",
        "",
        f"`python bench/classifier_widths.py --device {args.device} --lut {args.lut}`: classifiers of the table's "
        f"shape ({head.in_size} px input) at input x hidden widths no entry has, timed alone in one batch with the "
        "table's protocol; cost in units of the reference model. Pricing found: "
        f"{settings['pricing']}.",
        "",
        "| estimate | mean abs error | within +-10 % |",
        "|---|---|---|",
        f"| from the table with its probed hidden widths | {summary['estimate']['mean_abs_error'] * 100:.1f} % | "
        f"{summary['estimate']['within_10pct'] * 100:.0f} % of {len(rows)} |",
        f"| from the space's classifiers alone (before) | {summary['estimate_before']['mean_abs_error'] * 100:.1f} % "
        f"| {summary['estimate_before']['within_10pct'] * 100:.0f} % of {len(rows)} |",
        "",
        "| in | hidden | measured | estimate | error | before | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['in']} | {r['hidden']} | {r['measured']:.4f} | {r['estimate']:.4f} | "
            f"{(r['estimate'] / r['measured'] - 1) * 100:+.0f} % | {r['estimate_before']:.4f} | "
            f"{(r['estimate_before'] / r['measured'] - 1) * 100:+.0f} % |"
        )
    atomic_write_text(Path(args.out) / f"{name}.md", "\n".join(lines) + "\n")
    log("\n".join(lines[6:10]))


if __name__ == "__main__":
    main()
