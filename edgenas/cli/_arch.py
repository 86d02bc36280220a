"""``edgenas arch``: sample, predict, export and describe arch strings."""

from __future__ import annotations

import argparse
import json
import sys

from edgenas.cli._common import Parser, load_space, parse_arch, positive

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser(
        "arch",
        help="architectures: sample, predict, export, info",
        description="Work with arch strings such as 'r160|k3e4-k5e6se|k3e3|...'.",
    )
    asub = arch.add_subparsers(dest="command", required=True, parser_class=Parser)
    a = asub.add_parser(
        "sample", help="random arch strings, one per line", description="Print random archs of a space."
    )
    a.add_argument("--space", required=True, help="built-in space or YAML file")
    a.add_argument("--n", type=positive, default=1, help="how many (default 1)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a.set_defaults(func=_arch_sample)

    a = asub.add_parser(
        "predict",
        help="predicted latency (ms) from a table",
        description="Print the calibrated predicted latency in milliseconds.",
    )
    a.add_argument("arch", help="arch string")
    a.add_argument("--lut", required=True, help="latency table file")
    a.add_argument("--breakdown", action="store_true", help="also print each block's entry")
    a.add_argument("--uncalibrated", action="store_true", help="the raw sum of entries, no calibration")
    a.set_defaults(func=_arch_predict)

    a = asub.add_parser(
        "export",
        help="export an arch to ONNX",
        description="Export an arch to ONNX, fp32 or int8 QDQ, with random weights: the model a "
        "latency table's validation times, whose graph (and so latency) is the one a trained model "
        "of the arch exports to. Time it to check a prediction.",
    )
    a.add_argument("arch", help="arch string")
    a.add_argument("--space", required=True, help="built-in space or YAML file")
    a.add_argument("--out", required=True, help="ONNX file to write")
    a.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="default fp32")
    a.set_defaults(func=_arch_export)

    a = asub.add_parser("info", help="params, FLOPs and blocks of an arch", description="Params, FLOPs, blocks.")
    a.add_argument("arch", help="arch string")
    a.add_argument("--space", required=True, help="built-in space or YAML file")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=_arch_info)


def _arch_sample(args: argparse.Namespace) -> None:
    import numpy as np

    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        print(space.sample(rng))


def _arch_predict(args: argparse.Namespace) -> None:
    from edgenas.latency_tables import LatencyTable, Predictor

    predictor = Predictor(LatencyTable.load(args.lut))
    arch = parse_arch(predictor.space, args.arch)
    if args.breakdown:
        for key, ms in predictor.breakdown(arch):
            print(f"{ms:9.4f}  {key}")
    print(f"{predictor.predict(arch, calibrated=not args.uncalibrated):.4f}")
    why = None if args.uncalibrated else predictor.extrapolation(predictor.space.block_specs(arch))
    if why:  # on stderr: stdout stays the one number scripts read
        print(f"warning: the arch {why}", file=sys.stderr)


def _arch_export(args: argparse.Namespace) -> None:
    from edgenas.io import atomic_write_bytes
    from edgenas.latency_tables import arch_model

    space = load_space(args.space)
    arch = parse_arch(space, args.arch)
    atomic_write_bytes(args.out, arch_model(space, arch, args.precision))
    print(
        f"{args.out}: {arch} ({args.precision}, input [1, {space.in_chs}, {arch.resolution}, {arch.resolution}]; "
        "random weights, the graph a trained model of this arch exports to: time it to check a table's prediction)"
    )


def _arch_info(args: argparse.Namespace) -> None:
    from edgenas.search_spaces import footprint, profile_arch

    space = load_space(args.space)
    arch = parse_arch(space, args.arch)
    prof = profile_arch(space, arch)
    folded = footprint(space.block_specs(arch))
    fp = folded.record()
    if args.json:
        blocks = [{"key": s.key, "train_params": p, "flops": f} for s, p, f in prof.blocks]
        info = {
            "arch": str(arch),
            **arch.to_dict(),
            "params": folded.params,
            "train_params": prof.params,
            "flops": prof.flops,
            **fp,
            "blocks": blocks,
        }
        print(json.dumps(info, indent=1))
        return
    print(f"arch    {arch}")
    print(f"space   {space.name}   input {space.in_chs}x{arch.resolution}x{arch.resolution}   width {arch.width:g}")
    print(
        f"params  {folded.params:,} deployed (BatchNorm folded; {prof.params:,} in training)   "
        f"FLOPs {prof.flops / 1e6:.2f} M (multiply-adds)   blocks {len(prof.blocks)}"
    )
    print(f"flash   {fp['flash_kb:fp32']:.1f} kB fp32, {fp['flash_kb:int8']:.1f} kB int8 (the exported file)")
    print(f"RAM     {fp['ram_kb:fp32']:.1f} kB fp32, {fp['ram_kb:int8']:.1f} kB int8 (peak live activations, batch 1)")
    print(f"{'params*':>10} {'MFLOPs':>8}  block   (*in training, BatchNorm separate)")
    for spec, p, f in prof.blocks:
        print(f"{p:10,} {f / 1e6:8.3f}  {spec.key}")
