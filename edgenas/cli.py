"""The ``edgenas`` command line.

Every sub-command validates its arguments up front; bad input ends with one line,
``edgenas: error: ...``, and exit status 2. Heavy imports (torch) happen inside the
commands that need them, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"edgenas: error: {message} (see '{self.prog} --help')\n")


class _Fail(Exception):
    """An error the user can fix; printed as one line."""


def load_space(name_or_path: str):
    from edgenas.pipeline import load_space as load

    return load(name_or_path)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _parse_arch(space: Any, text: str):
    try:
        return space.parse(text)
    except ValueError as exc:
        raise _Fail(str(exc)) from exc


# ----------------------------------------------------------------------------------- lut
def _lut_build(args: argparse.Namespace) -> None:
    from edgenas.latency_tables import Protocol, build_table, make_backend, restrict_space

    space = load_space(args.space)
    if args.num_classes is not None:
        space = dataclasses.replace(space, num_classes=args.num_classes)
    restrict_space(space, args.resolutions, args.widths)  # bad values fail before the device is touched
    backend = make_backend(args.device, threads=args.threads, providers=args.providers.split(","), token=args.token)
    protocol = Protocol(rounds=args.rounds)
    table = build_table(
        space, backend, args.out, device=args.device, precision=args.precision, protocol=protocol,
        resolutions=args.resolutions, widths=args.widths,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
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
        args.table, backend, n=args.n, holdout=args.holdout, resolutions=args.resolutions, widths=args.widths,
        seed=args.seed, progress=not args.quiet,
    )  # fmt: skip
    if args.out:
        atomic_write_json(args.out, report)
    m = report["heldout"]
    print(
        f"{report['n_heldout']} held-out subnets: {m['within_5pct'] * 100:.0f} % within +-5 %, "
        f"{m['within_10pct'] * 100:.0f} % within +-10 %, MAPE {m['mape_pct']:.1f} %, "
        f"Kendall tau {m['kendall_tau']:.3f} (calibration {report['calibration']['features']})"
    )


def _lut_show(args: argparse.Namespace) -> None:
    import numpy as np

    from edgenas.latency_tables import LatencyTable

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
        lines.append(
            f"calibration measured = {terms}  (fitted on {c['n']}, leave-one-out MAPE {c['loo_mape'] * 100:.1f} %)"
        )
    else:
        lines.append("calibration none yet (run 'edgenas lut validate')")
    if table.validation:
        v, m = table.validation, table.validation["heldout"]
        lines.append(
            f"validation  {v['n_heldout']} held-out subnets: {m['within_5pct'] * 100:.0f} % within +-5 %, "
            f"{m['within_10pct'] * 100:.0f} % within +-10 %, MAPE {m['mape_pct']:.1f} %, tau {m['kendall_tau']:.3f}"
        )
    print("\n".join(lines))


# ----------------------------------------------------------------------------------- arch
def _arch_sample(args: argparse.Namespace) -> None:
    import numpy as np

    space = load_space(args.space)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        print(space.sample(rng))


def _arch_predict(args: argparse.Namespace) -> None:
    from edgenas.latency_tables import LatencyTable, Predictor

    predictor = Predictor(LatencyTable.load(args.lut))
    arch = _parse_arch(predictor.space, args.arch)
    if args.breakdown:
        for key, ms in predictor.breakdown(arch):
            print(f"{ms:9.4f}  {key}")
    print(f"{predictor.predict(arch, calibrated=not args.uncalibrated):.4f}")


def _arch_export(args: argparse.Namespace) -> None:
    from edgenas.io import atomic_write_bytes
    from edgenas.latency_tables import arch_model

    space = load_space(args.space)
    arch = _parse_arch(space, args.arch)
    atomic_write_bytes(args.out, arch_model(space, arch, args.precision))
    print(f"{args.out}: {arch} ({args.precision}, input [1, {space.in_chs}, {arch.resolution}, {arch.resolution}]; "
          "random weights, the graph a trained model of this arch exports to: time it to check a table's prediction)")


def _arch_info(args: argparse.Namespace) -> None:
    from edgenas.search_spaces import footprint, profile_arch

    space = load_space(args.space)
    arch = _parse_arch(space, args.arch)
    prof = profile_arch(space, arch)
    fp = footprint(space.block_specs(arch)).record()
    if args.json:
        blocks = [{"key": s.key, "params": p, "flops": f} for s, p, f in prof.blocks]
        info = {"arch": str(arch), **arch.to_dict(), "params": prof.params, "flops": prof.flops, **fp,
                "blocks": blocks}  # fmt: skip
        print(json.dumps(info, indent=1))
        return
    print(f"arch    {arch}")
    print(f"space   {space.name}   input {space.in_chs}x{arch.resolution}x{arch.resolution}   width {arch.width:g}")
    print(f"params  {prof.params:,}   FLOPs {prof.flops / 1e6:.2f} M (multiply-adds)   blocks {len(prof.blocks)}")
    print(f"flash   {fp['flash_kb:fp32']:.1f} kB fp32, {fp['flash_kb:int8']:.1f} kB int8 (the exported file)")
    print(f"RAM     {fp['ram_kb:fp32']:.1f} kB fp32, {fp['ram_kb:int8']:.1f} kB int8 (peak live activations, batch 1)")
    print(f"{'params':>10} {'MFLOPs':>8}  block")
    for spec, p, f in prof.blocks:
        print(f"{p:10,} {f / 1e6:8.3f}  {spec.key}")


# ----------------------------------------------------------------------------------- train / search
def _torch_device(text: str) -> str:
    from edgenas.accelerator import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _torch_device_arg(parser: argparse.ArgumentParser, overrides: str) -> None:
    parser.add_argument("--torch-device", type=_torch_device, metavar="DEVICE",
                        help=f"where torch trains and evaluates: auto (CUDA, then MPS, then CPU), cpu, cuda, "
                        f"cuda:N, mps; overrides {overrides} (the choice is recorded in the manifests)")  # fmt: skip


def _config(args: argparse.Namespace, overrides: dict[str, dict[str, Any]]):
    from edgenas.config import load_config

    return load_config(args.config, overrides)


def _train(args: argparse.Namespace) -> None:
    from edgenas import pipeline

    config = _config(args, {"train": {"epochs": args.epochs, "threads": args.threads, "device": args.torch_device}})
    _, history = pipeline.train(config, progress=not args.quiet)
    last = history[-1]
    print(f"{config.supernet_path}: {len(history)} epochs, last loss {last['loss_largest']:.4f} (largest), "
          f"{last['loss_students']:.4f} (students), val accuracy {last['val_largest'] * 100:.2f} % (largest) "
          f"{last['val_smallest'] * 100:.2f} % (smallest), {last['images_per_second']:.0f} images/s on "
          f"{last['compute']['device']}")  # fmt: skip


def _search(args: argparse.Namespace) -> None:
    from edgenas import pipeline
    from edgenas.nas import device_front, pareto_rows

    overrides = {"search": {"storage": args.storage, "n_trials": args.n_trials, "timeout": args.timeout,
                            "sampler": args.sampler, "study_name": args.study,
                            "device": args.torch_device}}  # fmt: skip
    config = _config(args, overrides)
    study = pipeline.search(config, worker=args.worker, progress=not args.quiet)
    rows, front = pareto_rows(study)
    print(f"{len(rows)} trials, {len(front)} on the Pareto front -> {config.search_dir}/pareto.csv")
    for r in front:
        lat = "  ".join(f"{k.split(':', 1)[1]} {v:.3f} ms" for k, v in r.items() if k.startswith("latency_ms:"))
        print(f"  acc {r['accuracy']:.4f}  {lat}  {r['arch']}")
    for d in config.devices:
        best = device_front(rows, d.name)
        if best:
            r = best[-1]  # the most accurate within the device's budget
            p = d.precision
            print(f"{d.name}: {len(best)} archs on its own front; most accurate within its budgets: acc "
                  f"{r['accuracy']:.4f}, {r[f'latency_ms:{d.name}']:.3f} ms, RAM {r[f'ram_kb:{p}']:.1f} kB, "
                  f"flash {r[f'flash_kb:{p}']:.1f} kB ({p}), {r['arch']}")  # fmt: skip


def _finalize(args: argparse.Namespace) -> None:
    from edgenas import pipeline

    config = _config(args, {"finalize": {"device": args.torch_device}})
    archs = None
    if args.arch:
        names = [args.device] if args.device else [d.name for d in config.devices]
        archs = {n: args.arch for n in names}
    if args.device and args.device not in {d.name for d in config.devices}:
        raise _Fail(f"unknown device {args.device!r}; the config has {[d.name for d in config.devices]}")
    if args.device:
        import dataclasses as dc

        config = dc.replace(config, devices=tuple(d for d in config.devices if d.name == args.device))
    cards = pipeline.finalize(config, archs=archs, progress=not args.quiet)
    for device, card in cards.items():
        by = {r["stage"]: r for r in card["stages"]}
        final = by["qat_int8" if card["chosen_precision"] == "int8" else "pruned"]
        print(f"{device}: {card['arch']} -> {config.finalize_dir / device / card['chosen_model']} "
              f"({card['chosen_precision']}, {final['latency_ms']:.3f} ms measured, "
              f"test accuracy {final['test_accuracy'] * 100:.2f} %, {final['size_mb']:.2f} MB); "
              f"model card: {config.finalize_dir / device / 'model_card.md'}")  # fmt: skip


def _run(args: argparse.Namespace) -> None:
    from edgenas import pipeline

    device = {"device": args.torch_device}
    config = _config(args, {"train": device, "search": device, "finalize": device})
    pipeline.run(config, from_stage=args.from_stage, progress=not args.quiet)
    print(f"report: {Path(config.run_dir) / 'report' / 'report.html'}")


def _report(args: argparse.Namespace) -> None:
    from edgenas.reports import write_report

    print(write_report(args.run_dir, png=not args.no_png))


def _predict(args: argparse.Namespace) -> None:
    from edgenas.predict import Model, accuracy_on, image_paths, predict_images

    model = Model.load(args.model)
    paths = image_paths(Path(args.target))
    if paths is None:
        r = accuracy_on(model, args.target)
        print(f"{args.target} ({r['split']}, {r['images']:,} images): accuracy {r['accuracy'] * 100:.2f} %")
        return
    for row in predict_images(model, paths, args.top):
        print(f"{row['image']}: " + ", ".join(f"{c} {p * 100:.1f} %" for c, p in row["top"]))


def _agent(args: argparse.Namespace) -> None:
    from edgenas.latency_tables._agent import TOKEN_ENV, serve_agent

    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise _Fail(f"the agent needs a token: --token T or ${TOKEN_ENV}")
    serve_agent(host=args.host, port=args.port, token=token, providers=args.providers.split(","),
                threads=args.threads, runtime=args.runtime, ov_device=args.ov_device.upper(),
                max_bytes=args.max_mb * 1024 * 1024, max_connections=args.max_connections)  # fmt: skip


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="edgenas",
        description="Hardware-aware neural architecture search: measure per-device latency tables, "
        "search a weight-sharing supernet, export verified ONNX models.",
    )
    sub = p.add_subparsers(dest="group", required=True, parser_class=_Parser)

    lut = sub.add_parser("lut", help="latency tables: build, validate, show",
                         description="Latency lookup tables: every block of a space timed on a device.")  # fmt: skip
    lsub = lut.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = lsub.add_parser(
        "build",
        help="measure every block of a space on a device",
        description="Export every block of the space to ONNX and time it on the device with the noise-robust "
        "protocol (interleaved with a reference model). Resumable: an existing --out is extended, entries "
        "already measured are kept.",
    )
    b.add_argument("--space", required=True, help="built-in space (mbv3, small, tiny) or a YAML space file")
    b.add_argument("--device", default="local-cpu",
                   help="'local-cpu' (default: ONNX Runtime, CPU), 'local' with --providers, 'openvino' or "
                   "'openvino:CPU|GPU|NPU' (OpenVINO in this process; pip install 'edgenas[openvino]'), or "
                   "agent://HOST:PORT")  # fmt: skip
    b.add_argument("--token", help="agent token (default: $EDGENAS_AGENT_TOKEN)")
    b.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="block precision (default fp32)")
    b.add_argument("--threads", type=_positive, default=1, help="ONNX Runtime intra-op threads (default 1)")
    b.add_argument("--providers", default="cpu", help="execution providers, comma-separated (default cpu)")
    b.add_argument("--resolutions", type=_int_list, help="only these resolutions, e.g. 160,224")
    b.add_argument("--widths", type=_float_list, help="only these width multipliers, e.g. 1.0")
    b.add_argument("--num-classes", type=_positive, help="classifier outputs (default: the space's, 10 built-in)")
    b.add_argument("--rounds", type=_positive, default=15, help="interleaved timing rounds per batch (default 15)")
    b.add_argument("--batch-size", type=_positive, default=24, help="blocks timed together (default 24)")
    b.add_argument("--out", required=True, help="table file (JSON); extended if it exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_lut_build)

    v = lsub.add_parser(
        "validate",
        help="measure subnets end to end, fit the calibration, report accuracy",
        description="Sample subnets spread over the latency range, export and time them whole, fit the "
        "calibration on part of them and report on the rest (share within +-5 %% and +-10 %%, MAPE, Kendall "
        "tau). The calibration and the figures are stored in the table.",
    )
    v.add_argument("table", help="latency table file")
    v.add_argument("--n", type=_positive, default=80, help="subnets to measure (default 80)")
    v.add_argument("--holdout", type=float, default=0.5, help="share held out for the report (default 0.5)")
    v.add_argument("--resolutions", type=_int_list, help="only subnets at these resolutions")
    v.add_argument("--widths", type=_float_list, help="only subnets at these widths")
    v.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    v.add_argument("--out", help="write the full report (JSON, every subnet) here")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_lut_validate)

    s = lsub.add_parser(
        "show", help="summarise a table", description="Print a table's header, calibration and validation."
    )
    s.add_argument("table", help="latency table file")
    s.add_argument("--json", action="store_true", help="print header, calibration and validation as JSON")
    s.set_defaults(func=_lut_show)

    arch = sub.add_parser("arch", help="architectures: sample, predict, export, info",
                          description="Work with arch strings such as 'r160|k3e4-k5e6se|k3e3|...'.")  # fmt: skip
    asub = arch.add_subparsers(dest="command", required=True, parser_class=_Parser)
    a = asub.add_parser(
        "sample", help="random arch strings, one per line", description="Print random archs of a space."
    )
    a.add_argument("--space", required=True, help="built-in space or YAML file")
    a.add_argument("--n", type=_positive, default=1, help="how many (default 1)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a.set_defaults(func=_arch_sample)

    a = asub.add_parser("predict", help="predicted latency (ms) from a table",
                        description="Print the calibrated predicted latency in milliseconds.")  # fmt: skip
    a.add_argument("arch", help="arch string")
    a.add_argument("--lut", required=True, help="latency table file")
    a.add_argument("--breakdown", action="store_true", help="also print each block's entry")
    a.add_argument("--uncalibrated", action="store_true", help="the raw sum of entries, no calibration")
    a.set_defaults(func=_arch_predict)

    a = asub.add_parser("export", help="export an arch to ONNX",
                        description="Export an arch to ONNX, fp32 or int8 QDQ, with random weights: the model a "
                        "latency table's validation times, whose graph (and so latency) is the one a trained model "
                        "of the arch exports to. Time it to check a prediction.")  # fmt: skip
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

    t = sub.add_parser(
        "train",
        help="train the supernet (sandwich rule + in-place distillation)",
        description="Train the weight-sharing supernet of the configured space on the configured data. "
        "Checkpoints every epoch to RUN_DIR/supernet.pt; re-running resumes.",
    )
    t.add_argument("--config", required=True, help="YAML run configuration")
    t.add_argument("--epochs", type=_positive, help="override train.epochs")
    t.add_argument("--threads", type=int, help="override train.threads (0: every core)")
    _torch_device_arg(t, "train.device")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    se = sub.add_parser(
        "search",
        help="multi-objective Optuna search over the trained supernet",
        description="Search accuracy vs predicted latency per device (or activation memory and model size: "
        "devices[].objectives), with each device's budgets (budget_ms, ram_kb, flash_kb) as constraints: each "
        "device gets its own model, so a trial counts when it meets all budgets of at least one device, and each "
        "device has its own front in pareto.json. Re-running resumes the study; several workers can share "
        "one study through --storage.",
    )
    se.add_argument("--config", required=True, help="YAML run configuration")
    se.add_argument("--storage", help="Optuna storage URL (default: sqlite file RUN_DIR/search/study.db); "
                    "postgresql://..., sqlite:///..., or journal:PATH")  # fmt: skip
    se.add_argument("--n-trials", type=_positive, help="total complete trials wanted in the study")
    se.add_argument("--timeout", type=float, help="stop this worker after so many seconds")
    se.add_argument("--sampler", choices=("nsga2", "tpe", "random", "guided"), help="override search.sampler")
    se.add_argument("--study", help="override search.study_name")
    se.add_argument("--worker", type=int, default=0, help="worker index (seeds this worker's sampler)")
    _torch_device_arg(se, "search.device")
    se.add_argument("--quiet", action="store_true", help="no progress bar")
    se.set_defaults(func=_search)

    f = sub.add_parser(
        "finalize",
        help="distill, prune, QAT, export and re-measure the chosen archs",
        description="For each device (or --device), take the most accurate Pareto arch within its budget "
        "(or --arch), finetune it with distillation, prune it, QAT-finetune it, export fp32 / int8 ONNX, "
        "check the exports, measure them on the device and write a model card. Resumable step by step.",
    )
    f.add_argument("--config", required=True, help="YAML run configuration")
    f.add_argument("--arch", help="finalize this arch instead of choosing from the Pareto set")
    f.add_argument("--device", help="only this device of the config")
    _torch_device_arg(f, "finalize.device")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_finalize)

    r = sub.add_parser(
        "run",
        help="every stage, from data to verified device models and the report",
        description="Run latency tables -> validation -> supernet training -> search -> finalize -> report into "
        "the config's run_dir. Stages whose inputs did not change are skipped; a killed run resumes.",
    )
    r.add_argument("config", help="YAML run configuration")
    r.add_argument("--from", dest="from_stage", choices=("lut", "train", "search", "finalize", "report"),
                   help="force this stage and every later one")  # fmt: skip
    _torch_device_arg(r, "train.device, search.device and finalize.device")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)

    rp = sub.add_parser(
        "report",
        help="write the HTML report of a run directory",
        description="Write RUN_DIR/report/report.html (plotly, self-contained), CSV and PNG.",
    )
    rp.add_argument("run_dir", help="run directory")
    rp.add_argument("--no-png", action="store_true", help="skip PNG export")
    rp.set_defaults(func=_report)

    pr = sub.add_parser(
        "predict",
        help="run an exported model on images or a data set (ONNX Runtime only, no torch)",
        description="Run a model finalize exported, with the preprocessing and classes it carries. TARGET: an "
                    "image, a folder of images (top classes of each), the model's training data set by its "
                    "data.name (accuracy on the test split its model card reports), or other labelled data "
                    "(an image folder ROOT/<class>/<image>, a .npz, a built-in name: accuracy on all of it).",
    )  # fmt: skip
    pr.add_argument("model", help="an .onnx file written by finalize")
    pr.add_argument("target", help="image, folder, or data set")
    pr.add_argument("--top", type=_positive, default=3, help="classes shown per image (default 3)")
    pr.set_defaults(func=_predict)

    ag = sub.add_parser(
        "agent",
        help="serve latency measurements on this device over HTTP",
        description="Run on the target device (needs only numpy and the runtime: onnxruntime, or openvino with "
        "--runtime openvino). Receives ONNX models, times "
        "them with the latency-table protocol and returns the timings and the device fingerprint. Every request "
        "needs the token. Binds 127.0.0.1 unless --host says otherwise.",
    )
    ag.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ag.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    ag.add_argument("--token", help="shared secret, >= 8 characters (default: $EDGENAS_AGENT_TOKEN)")
    ag.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                    help="what runs the models (default onnxruntime)")  # fmt: skip
    ag.add_argument("--providers", default="cpu", help="ONNX Runtime's execution providers, comma-separated (cpu)")
    ag.add_argument("--ov-device", default="CPU", help="OpenVINO device: CPU (default), GPU, NPU")
    ag.add_argument("--threads", type=_positive, default=1, help="inference threads (default 1)")
    ag.add_argument("--max-mb", type=_positive, default=256, help="request size limit in MB (default 256)")
    ag.add_argument("--max-connections", type=_positive, default=8,
                    help="connections served at once; more get a 503 (default 8)")  # fmt: skip
    ag.set_defaults(func=_agent)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edgenas.errors import ExportCheckError
    from edgenas.latency_tables._agent import AgentError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (_Fail, ValueError, FileNotFoundError, LookupError, AgentError) as exc:
        if type(exc) in (KeyError, IndexError):  # a bug, not bad input: keep the traceback
            raise
        msg = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        print(f"edgenas: error: {msg}", file=sys.stderr)
        return 2
    except ExportCheckError as exc:  # not bad input: the export is wrong; the model card says which
        print(f"edgenas: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgenas: interrupted (finished work is saved; run the same command to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
