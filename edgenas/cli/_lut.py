"""``edgenas lut``: build, validate and show latency tables."""

from __future__ import annotations

import argparse
import dataclasses
import json

from edgenas.cli._common import Parser, float_list, int_list, load_space, positive

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    lut = sub.add_parser(
        "lut",
        help="latency tables: build, validate, show",
        description="Latency lookup tables: every block of a space timed on a device.",
    )
    lsub = lut.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_build(lsub)
    _add_validate(lsub)
    _add_show(lsub)


def _add_build(lsub: argparse._SubParsersAction) -> None:
    b = lsub.add_parser(
        "build",
        help="measure every block of a space on a device",
        description="Export every block of the space (in the device runtime's format: ONNX, an ExecuTorch .pte, "
        "an ncnn model) and time it on the device with the noise-robust "
        "protocol (interleaved with a reference model). Resumable: an existing --out is extended, entries "
        "already measured are kept.",
    )
    b.add_argument("--space", required=True, help="built-in space (mbv3, small, tiny) or a YAML space file")
    b.add_argument(
        "--device",
        default="local-cpu",
        help="'local-cpu' (default: ONNX Runtime, CPU), 'local' with --providers, 'openvino' or "
        "'openvino:CPU|GPU|NPU' (OpenVINO in this process; pip install 'edgenas[openvino]'), 'executorch' "
        "(ExecuTorch with XNNPACK, the kernels phone apps run; pip install 'edgenas[executorch]'), 'ncnn' "
        "(fp32; pip install 'edgenas[ncnn]'), or agent://HOST:PORT",
    )
    b.add_argument("--token", help="agent token (default: $EDGENAS_AGENT_TOKEN)")
    b.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="block precision (default fp32)")
    b.add_argument("--threads", type=positive, default=1, help="ONNX Runtime intra-op threads (default 1)")
    b.add_argument("--providers", default="cpu", help="execution providers, comma-separated (default cpu)")
    b.add_argument("--resolutions", type=int_list, help="only these resolutions, e.g. 160,224")
    b.add_argument("--widths", type=float_list, help="only these width multipliers, e.g. 1.0")
    b.add_argument("--num-classes", type=positive, help="classifier outputs (default: the space's, 10 built-in)")
    b.add_argument("--rounds", type=positive, default=15, help="interleaved timing rounds per batch (default 15)")
    b.add_argument("--batch-size", type=positive, default=24, help="blocks timed together (default 24)")
    b.add_argument("--out", required=True, help="table file (JSON); extended if it exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_lut_build)


def _add_validate(lsub: argparse._SubParsersAction) -> None:
    v = lsub.add_parser(
        "validate",
        help="measure subnets end to end, fit the calibration, report accuracy",
        description="Sample subnets spread over the latency range, export and time them whole, fit the "
        "calibration on part of them and report on the rest (share within +-5 % and +-10 %, MAPE, Kendall "
        "tau). The calibration and the figures are stored in the table. A table validated before is read with "
        "its previous calibration first: more than 3 % off (the median) means the machine ran whole networks at "
        "another speed in one of the two validations, and it warns: validate again until two in a row agree.",
    )
    v.add_argument("table", help="latency table file")
    v.add_argument("--n", type=positive, default=80, help="subnets to measure (default 80)")
    v.add_argument("--holdout", type=float, default=0.5, help="share held out for the report (default 0.5)")
    v.add_argument("--resolutions", type=int_list, help="only subnets at these resolutions")
    v.add_argument("--widths", type=float_list, help="only subnets at these widths")
    v.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    v.add_argument(
        "--pruned",
        type=float,
        default=0.25,
        help="share of the subnets measured with 10-40 %% of their channels pruned, as finalize prunes "
        "(default 0.25; 0 to 0.5)",
    )
    v.add_argument(
        "--repeats",
        type=positive,
        default=3,
        help="times each subnet is timed, each in batches of a new random mix; the median is kept (default 3)",
    )
    v.add_argument("--out", help="write the full report (JSON, every subnet) here")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_lut_validate)


def _add_show(lsub: argparse._SubParsersAction) -> None:
    s = lsub.add_parser(
        "show", help="summarise a table", description="Print a table's header, calibration and validation."
    )
    s.add_argument("table", help="latency table file")
    s.add_argument("--json", action="store_true", help="print header, calibration and validation as JSON")
    s.set_defaults(func=_lut_show)


def _lut_build(args: argparse.Namespace) -> None:
    from edgenas.latency_tables import Protocol, build_table, make_backend, restrict_space

    space = load_space(args.space)
    if args.num_classes is not None:
        space = dataclasses.replace(space, num_classes=args.num_classes)
    restrict_space(space, args.resolutions, args.widths)  # bad values fail before the device is touched
    backend = make_backend(args.device, threads=args.threads, providers=args.providers.split(","), token=args.token)
    protocol = Protocol(rounds=args.rounds)
    table = build_table(
        space,
        backend,
        args.out,
        device=args.device,
        precision=args.precision,
        protocol=protocol,
        resolutions=args.resolutions,
        widths=args.widths,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    h = table.header
    print(
        f"{args.out}: {len(table.entries)} entries, reference {h['reference_ms']:.3f} ms, "
        f"build {h['build_seconds']:.0f} s, drift {h.get('drift', {}).get('median_ms_change', 0) * 100:+.1f} %"
    )


def _lut_validate(args: argparse.Namespace) -> None:
    from edgenas.io import atomic_write_json
    from edgenas.latency_tables import LatencyTable, make_backend, validate_table

    table = LatencyTable.load(args.table)
    h = table.header
    backend = make_backend(h["device"], threads=h["threads"], providers=h["providers"])
    report = validate_table(
        args.table,
        backend,
        n=args.n,
        holdout=args.holdout,
        resolutions=args.resolutions,
        widths=args.widths,
        seed=args.seed,
        pruned=args.pruned,
        repeats=args.repeats,
        progress=not args.quiet,
    )
    if args.out:
        atomic_write_json(args.out, report)
    m = report["heldout"]
    print(
        f"{report['n_heldout']} held-out subnets: {m['within_5pct'] * 100:.0f} % within +-5 %, "
        f"{m['within_10pct'] * 100:.0f} % within +-10 %, MAPE {m['mape_pct']:.1f} %, "
        f"Kendall tau {m['kendall_tau']:.3f} (calibration {report['calibration']['features']})"
        + _previous_level_note(report["previous_calibration_level"])
    )


def _previous_level_note(level: float | None) -> str:
    return "" if level is None else f"; the previous calibration read them {(level - 1) * 100:+.1f} %"


def _lut_show(args: argparse.Namespace) -> None:
    import numpy as np

    from edgenas.latency_tables import LatencyTable, Predictor

    table = LatencyTable.load(args.table)
    h = table.header
    if args.json:
        print(json.dumps({k: v for k, v in table.to_dict().items() if k != "entries"}, indent=1))
        return
    spreads = np.array([e["spread"] for e in table.entries.values()]) if table.entries else np.zeros(1)
    lines = [
        f"table       {args.table}",
        f"space       {h['space']}  (measured: resolutions {h['coverage']['resolutions']}, "
        f"widths {h['coverage']['widths']})",
        f"device      {h['device']}: {h['cpu']}, {h['fingerprint']['os']}",
        f"runtime     {h['runtime']}, providers {h['providers']}, threads {h['threads']}, "
        f"opset {h['opset']}, batch {h['batch']}",
        f"precision   {h['precision']}",
        f"entries     {len(table.entries)}  (spread median {np.median(spreads) * 100:.1f} %, "
        f"max {spreads.max() * 100:.1f} %)",
        f"reference   {h['reference_ms']:.3f} ms   per-call overhead {h['noop_ms'] * 1000:.1f} us",
        f"build       {h['build_seconds']:.0f} s in {len(h['batches'])} batches",
    ]
    if "drift" in h:
        d = h["drift"]
        lines.append(
            f"drift       {d['n']} first entries re-timed at the end: ms {d['median_ms_change'] * 100:+.1f} %, "
            f"relative to reference {d['median_rel_change'] * 100:+.1f} % (median)"
        )
    if table.calibration:
        c = table.calibration
        terms = " + ".join(f"{v:.4g}*{n}" for n, v in zip(c["features"], c["coef"]))
        fitted = f"fitted on {c['n']}"
        if "params_range" in c:  # what the calibration vouches for; beyond it predictions are extrapolated
            fitted += " of {:.2f}-{:.2f} M parameters".format(*c["params_range"])
        lines.append(f"calibration measured = {terms}  ({fitted}, leave-one-out MAPE {c['loo_mape'] * 100:.1f} %)")
    else:
        lines.append("calibration none yet (run 'edgenas lut validate')")
    try:  # an unfinished table has nothing to price with yet
        lines.append(f"pruned      blocks priced with {Predictor(table).channel_pricing.describe()}")
    except ValueError:
        pass
    if table.validation:
        v, m = table.validation, table.validation["heldout"]
        lines.append(
            f"validation  {v['n_heldout']} held-out subnets: {m['within_5pct'] * 100:.0f} % within +-5 %, "
            f"{m['within_10pct'] * 100:.0f} % within +-10 %, MAPE {m['mape_pct']:.1f} %, tau {m['kendall_tau']:.3f}"
        )
    print("\n".join(lines))
