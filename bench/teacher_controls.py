"""The teacher's share in finalize: one arch distilled under each teacher, over seeds.

From the committed supernet (bench/results/supernet_fmnist.pt), finalize runs the arch with the
config's schedule (by default configs/fashion-mnist-teachers.yaml: 15 epochs, alpha 0.7 -> 0.3)
under each teacher:

  labels    no teacher: alpha 0 throughout, the supernet's weights finetuned on the labels alone
  largest   the largest subnet (finalize's default teacher)
  ensemble  the config's ``finalize.teacher`` files (or --ensemble): the mean of their logits
  largest-clean, ensemble-clean
            the same teachers with ``finalize.teacher_logits: clean`` (their logits of the
            un-augmented images, computed once): what the cheaper distillation costs in accuracy

and scores the distilled model's fp32 ONNX file on the official test split, as the card does.
Pruning and QAT are left out unless --full: what is compared is the distillation. Per setting the
summary gives the mean over seeds, their spread, and the difference to ``labels`` beside the test
split's uncertainty (a difference inside it is no gain). Every finalize is its own resumable
folder under --workdir; results are written after each one: run the command again after an
interruption. On a GPU: --torch-device cuda (the teacher files still run in ONNX Runtime on the CPU).

    python bench/teacher_controls.py --seeds 0 1 --settings labels ensemble
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from _setup import SUPERNET, log, md_code

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.finalize import finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend
from edgenas.nas import load_supernet, set_threads
from edgenas.pruning import PruneConfig
from edgenas.reports import accuracy_margin_pts, difference_margin_pts
from edgenas.teacher import teacher_files

SETTINGS = ("labels", "largest", "ensemble", "largest-clean", "ensemble-clean")
# the headline search's choice at 2/3 of MobileNetV3-Small 0.75's predicted latency (cpu-fast)
FAST_ARCH = "r28w0.75|k5e3se-k7e3|k3e3se-k7e6|k5e4|k3e3se"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist-teachers.yaml", help="data, schedule and teacher files")
    p.add_argument("--arch", default=FAST_ARCH)
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS[:3]))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--ensemble", nargs="+", help="ONNX teacher files (default: the config's finalize.teacher)")
    p.add_argument("--epochs", type=int, help="distillation epochs (default: the config's)")
    p.add_argument("--lr", type=float, help="the distillation's peak learning rate (default: the config's finalize.lr)")
    p.add_argument(
        "--alpha", nargs=2, type=float, metavar=("START", "END"), help="a teacher's share (default: the config's)"
    )
    p.add_argument("--full", action="store_true", help="prune and QAT-finetune as the config says, too")
    p.add_argument("--torch-device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--supernet", default=SUPERNET)
    p.add_argument("--workdir", default="runs/bench_teacher_controls")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    config = load_config(args.config)
    ensemble = tuple(args.ensemble or map(str, teacher_files(config.finalize.teacher)))
    if any(s.startswith("ensemble") for s in args.settings) and not ensemble:
        p.error("the ensemble setting needs teacher files: --ensemble FILE... or finalize.teacher in --config")
    alpha = tuple(args.alpha or (config.finalize.alpha_start, config.finalize.alpha_end))
    if any(s != "labels" for s in args.settings) and not any(alpha):
        # configs/fashion-mnist.yaml trains on the labels alone since 2026-12-08: a teacher at alpha 0 teaches nothing
        p.error(
            f"{args.config} trains on the labels alone (alpha 0): a teacher setting needs --alpha START END (the "
            "headline config's until 2026-12-08: --alpha 0.5 0.1 --lr 0.05)"
        )
    set_threads(args.threads)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    supernet = load_supernet(space, args.supernet)
    arch = space.parse(args.arch)
    out = Path(args.out) / "teacher_controls.json"
    results = read_json(out) if out.exists() else {}
    results.update(arch=args.arch, config=args.config, ensemble=list(ensemble), test_images=len(splits.test.labels))
    runs = results.setdefault("runs", {})
    for setting in args.settings:
        for seed in args.seeds:
            fin = _finalize_config(config.finalize, setting, seed, ensemble, args)
            name = f"{setting}_s{seed}" + (f"_e{fin.distill_epochs}" if args.epochs else "")
            name += f"_lr{fin.lr:g}" if args.lr else ""
            name += f"_a{fin.alpha_start:g}-{fin.alpha_end:g}" if args.alpha and setting != "labels" else ""
            log(f"{name}: finalize {args.arch} ({fin.distill_epochs} epochs, teacher {setting})")
            start = time.time()
            card = finalize_arch(
                arch,
                space=space,
                supernet=supernet,
                splits=splits,
                backend=LocalBackend(threads=1),
                out_dir=Path(args.workdir) / name,
                config=fin,
                device="local-cpu",
                augment=config.data.augmentations,
                data=pipeline.data_record(config),
                progress=False,
            )
            runs[name] = {**_row(card, setting, seed, time.time() - start), "lr": fin.lr, "epochs": fin.distill_epochs}
            runs[name]["alpha"] = [fin.alpha_start, fin.alpha_end]
            log(f"{name}: test {_pct(runs[name]['test_accuracy'])}, val {_pct(runs[name]['val_accuracy'])}")
            results["summary"] = _summary(runs, results["test_images"])
            atomic_write_json(out, results)
    md = _markdown(results)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)


def _logits_note(setting: str) -> str:
    return " (clean logits)" if setting.endswith("-clean") else ""


def _pct(accuracy: float) -> str:
    return f"{accuracy * 100:.2f} %"


def _finalize_config(base, setting: str, seed: int, ensemble: tuple[str, ...], args: argparse.Namespace):
    """The config's finalize settings for one run: its teacher, seed and device; distillation only unless --full."""
    fin = dataclasses.replace(
        base,
        seed=seed,
        device=args.torch_device,
        teacher=ensemble if setting.startswith("ensemble") else None,
        teacher_logits="clean" if setting.endswith("-clean") else "online",
        teacher_epochs=0,
        distill_epochs=args.epochs or base.distill_epochs,
        lr=args.lr or base.lr,
        alpha_start=args.alpha[0] if args.alpha else base.alpha_start,
        alpha_end=args.alpha[1] if args.alpha else base.alpha_end,
    )
    if setting == "labels":
        fin = dataclasses.replace(fin, alpha_start=0.0, alpha_end=0.0)
    if not args.full:
        fin = dataclasses.replace(fin, prune=PruneConfig(max_steps=0), qat_epochs=0, accept_failed_checks=True)
    return fin


def _row(card: dict, setting: str, seed: int, seconds: float) -> dict:
    """One run: the distilled file's test accuracy, the validation curve, the deployed file and the minutes."""
    stages = {s["stage"]: s for s in card["stages"]}
    curve = card["distill_epochs"]
    return {
        "setting": setting,
        "seed": seed,
        "teacher": "none (alpha 0)" if setting == "labels" else card["teacher"] + _logits_note(setting),
        "test_accuracy": stages["distilled"]["test_accuracy"],
        "val_accuracy": card["validation"]["distilled"],
        "teacher_test_accuracy": stages["teacher"]["test_accuracy"],
        "deployed": card["deployed"],
        "latency_ms": stages["distilled"]["latency_ms"],
        "kept_epoch": curve["kept_epoch"],
        "val_curve": [e["val_accuracy"] for e in curve["epochs"]],
        "distill_minutes": card["step_seconds"]["distilled"] / 60,  # kept in the step's record across resumes
        "minutes": seconds / 60,  # this call (0 for a run resumed whole)
        "compute": card["compute"],
    }


def _summary(runs: dict, images: int) -> dict:
    """Per setting: mean test accuracy over seeds, the seeds' spread, and the difference to labels-only."""
    by: dict[str, list[float]] = {}
    for r in runs.values():
        by.setdefault(r["setting"], []).append(r["test_accuracy"])
    summary = {
        s: {
            "seeds": len(accs),
            "mean": statistics.fmean(accs),
            "spread_pts": (max(accs) - min(accs)) * 100,
            "margin_pts": accuracy_margin_pts(statistics.fmean(accs), images),
        }
        for s, accs in by.items()
    }
    if "labels" in summary:
        base = summary["labels"]["mean"]
        for row in summary.values():
            row["vs_labels_pts"] = (row["mean"] - base) * 100
            row["difference_margin_pts"] = difference_margin_pts(row["mean"], base, images)
    return summary


def _markdown(results: dict) -> str:
    summary = results["summary"]
    lines = [
        "# The teacher's share in finalize",
        "",
        f"`python bench/teacher_controls.py`: {md_code(results['arch'])} distilled from the committed supernet "
        f"with the schedule of `{results['config']}`, under each teacher; test accuracy of the distilled fp32 "
        f"ONNX file on the {results['test_images']:,} test images (± half the 95 % interval from the split's size).",
        "",
        "| teacher | seeds | test accuracy (mean) | seeds' spread | vs labels only |",
        "|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        if setting not in summary:
            continue
        row = summary[setting]
        vs = "—"
        if "vs_labels_pts" in row and setting != "labels":
            gain = row["vs_labels_pts"]
            margin = row["difference_margin_pts"]
            verdict = "a gain" if gain > margin else "a loss" if gain < -margin else "inside the uncertainty"
            vs = f"{gain:+.2f} pt (± {margin:.2f}: {verdict})"
        lines.append(
            f"| {setting} | {row['seeds']} | {_pct(row['mean'])} ± {row['margin_pts']:.2f} | "
            f"{row['spread_pts']:.2f} pt | {vs} |"
        )
    header = "| run | teacher | epochs, lr | test | val (kept epoch) | distillation (min) | where |"
    lines += ["", header, "|---" * 7 + "|"]
    for name, r in sorted(results["runs"].items()):
        where = f"{r['compute']['device']} ({r['compute']['name']}, threads {r['compute']['threads']})"
        schedule = f"{r['epochs']}, {r['lr']:g}" if "lr" in r else "the config's"  # runs before --lr recorded neither
        lines.append(
            f"| {name} | {r['teacher']} | {schedule} | {_pct(r['test_accuracy'])} | {_pct(r['val_accuracy'])} "
            f"({r['kept_epoch']}) | {r['distill_minutes']:.1f} | {where} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
