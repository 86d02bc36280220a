"""The pipeline's commands: ``train``, ``search``, ``finalize``, ``run`` and ``report``."""

from __future__ import annotations

import argparse

from edgenas.cli._common import Fail, load_config, positive, quiet_optuna, torch_device_arg

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    for add in (_add_train, _add_search, _add_finalize, _add_run, _add_report):
        add(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train the supernet (sandwich rule + in-place distillation)",
        description="Train the weight-sharing supernet of the configured space on the configured data. "
        "Checkpoints every epoch to RUN_DIR/supernet.pt; re-running resumes.",
    )
    t.add_argument("--config", required=True, help="YAML run configuration")
    t.add_argument("--epochs", type=positive, help="override train.epochs")
    t.add_argument("--threads", type=int, help="override train.threads (0: every core)")
    torch_device_arg(t, "train.device")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)


def _add_search(sub: argparse._SubParsersAction) -> None:
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
    se.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite file RUN_DIR/search/study.db); "
        "postgresql://..., sqlite:///..., or journal:PATH",
    )
    se.add_argument("--n-trials", type=positive, help="total complete trials wanted in the study")
    se.add_argument("--timeout", type=float, help="stop this worker after so many seconds")
    se.add_argument("--sampler", choices=("nsga2", "tpe", "random", "guided"), help="override search.sampler")
    se.add_argument("--study", help="override search.study_name")
    se.add_argument("--worker", type=int, default=0, help="worker index (seeds this worker's sampler)")
    torch_device_arg(se, "search.device")
    se.add_argument("--quiet", action="store_true", help="no progress bar")
    se.set_defaults(func=_search)


def _add_finalize(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "finalize",
        help="distill, prune, QAT, export and re-measure the chosen archs",
        description="For each device (or --device), take the arch the search chose within its budget (search.tie_pts) "
        "(or --arch), finetune it with distillation, prune it, QAT-finetune it, export fp32 / int8 ONNX, "
        "check the exports, measure them on the device and write a model card. Resumable step by step.",
    )
    f.add_argument("--config", required=True, help="YAML run configuration")
    f.add_argument("--arch", help="finalize this arch instead of choosing from the Pareto set")
    f.add_argument("--device", help="only this device of the config")
    torch_device_arg(f, "finalize.device")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_finalize)


def _add_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "run",
        help="every stage, from data to verified device models and the report",
        description="Run latency tables -> validation -> supernet training -> search -> finalize -> report into "
        "the config's run_dir. Stages whose inputs did not change are skipped; a killed run resumes.",
    )
    r.add_argument("config", help="YAML run configuration")
    r.add_argument(
        "--from",
        dest="from_stage",
        choices=("lut", "train", "search", "finalize", "report"),
        help="start this stage and every later one over: their outputs are removed first (never a table named "
        "with lut:; for finalize, every device's trained steps), where a plain run resumes or skips them",
    )
    torch_device_arg(r, "train.device, search.device and finalize.device")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_run)


def _add_report(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "report",
        help="write the HTML report of a run directory, or compare runs",
        description="One RUN_DIR: write RUN_DIR/report/report.html (self-contained: summary per device, fronts, "
        "training, search convergence, table validation, compression, provenance) with every figure's data as "
        "CSV and PNG. Several: one page comparing them (fronts overlaid, a summary row per run and device) in "
        "--out.",
    )
    rp.add_argument("run_dir", nargs="+", help="run directory (several: compare them)")
    rp.add_argument(
        "--out",
        default="edgenas-comparison",
        help="where a comparison of several runs goes (default ./edgenas-comparison)",
    )
    rp.add_argument("--no-png", action="store_true", help="skip PNG export")
    rp.set_defaults(func=_report)


def _train(args: argparse.Namespace) -> None:
    from edgenas import pipeline

    config = load_config(args, {"train": {"epochs": args.epochs, "threads": args.threads, "device": args.torch_device}})
    _, history = pipeline.train(config, progress=not args.quiet)
    last = history[-1]
    print(
        f"{config.layout.supernet}: {len(history)} epochs, last loss {last['loss_largest']:.4f} (largest), "
        f"{last['loss_students']:.4f} (students), val accuracy {last['val_largest'] * 100:.2f} % (largest) "
        f"{last['val_smallest'] * 100:.2f} % (smallest), {last['images_per_second']:.0f} images/s on "
        f"{last['compute']['device']}"
    )


def _search(args: argparse.Namespace) -> None:
    from edgenas import pipeline
    from edgenas.nas import device_choice, device_front, pareto_rows

    overrides = {
        "search": {
            "storage": args.storage,
            "n_trials": args.n_trials,
            "timeout": args.timeout,
            "sampler": args.sampler,
            "study_name": args.study,
            "device": args.torch_device,
        }
    }
    config = load_config(args, overrides)
    quiet_optuna()
    study = pipeline.search(config, worker=args.worker, progress=not args.quiet)
    rows, front = pareto_rows(study)
    print(f"{len(rows)} trials, {len(front)} on the Pareto front -> {config.layout.search / 'pareto.csv'}")
    for r in front:
        lat = "  ".join(f"{k.split(':', 1)[1]} {v:.3f} ms" for k, v in r.items() if k.startswith("latency_ms:"))
        print(f"  acc {r['accuracy']:.4f}  {lat}  {r['arch']}")
    tie = config.search.tie_pts
    for d in config.devices:
        r = device_choice(rows, d.name, tie)
        if r:
            p = d.precision
            print(
                f"{d.name}: {len(device_front(rows, d.name))} archs on its own front; chosen (the slowest within "
                f"{tie:g} pt of the most accurate within its budgets): acc "
                f"{r['accuracy']:.4f}, {r[f'latency_ms:{d.name}']:.3f} ms, RAM {r[f'ram_kb:{p}']:.1f} kB, "
                f"flash {r[f'flash_kb:{p}']:.1f} kB ({p}), {r['arch']}"
            )


def _finalize(args: argparse.Namespace) -> None:
    from edgenas import pipeline
    from edgenas.layout import ModelCard

    config = load_config(args, {"finalize": {"device": args.torch_device}})
    archs = None
    if args.arch:
        names = [args.device] if args.device else [d.name for d in config.devices]
        archs = {n: args.arch for n in names}
    if args.device and args.device not in {d.name for d in config.devices}:
        raise Fail(f"unknown device {args.device!r}; the config has {[d.name for d in config.devices]}")
    if args.device:
        import dataclasses as dc

        config = dc.replace(config, devices=tuple(d for d in config.devices if d.name == args.device))
    cards = pipeline.finalize(config, archs=archs, progress=not args.quiet)
    for device in cards:
        card = ModelCard.load(config.layout.model_card(device))
        final = card.deployed
        print(
            f"{device}: {card.arch} -> {config.layout.finalize(device) / card.deployed_file} "
            f"({card.precision}, {final['latency_ms']:.3f} ms measured, "
            f"test accuracy {final['test_accuracy'] * 100:.2f} %, {final['size_mb']:.2f} MB); "
            f"model card: {config.layout.finalize(device) / 'model_card.md'}"
        )


def _run(args: argparse.Namespace) -> None:
    from edgenas import pipeline

    device = {"device": args.torch_device}
    config = load_config(args, {"train": device, "search": device, "finalize": device})
    quiet_optuna()
    pipeline.run(config, from_stage=args.from_stage, progress=not args.quiet)
    print(f"report: {config.layout.report / 'report.html'}")


def _report(args: argparse.Namespace) -> None:
    from edgenas.reports import write_comparison, write_report

    runs = list(dict.fromkeys(args.run_dir))
    if len(runs) == 1:
        print(write_report(runs[0], png=not args.no_png))
    else:
        print(write_comparison(runs, args.out, png=not args.no_png))
