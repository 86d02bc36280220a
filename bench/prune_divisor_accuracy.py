"""What pruning to the runtime's channel block costs in accuracy: the headline's distilled model pruned both ways.

`bench/prune_divisor.py` times pruned files; this bench trains them. It takes a device's
distilled model from the headline run (`bench/deploy.py`'s finalize folder) and runs
finalize's pruning on it for each divisor: 2 steps of 10 % of the channels, each followed by
finalize's 1-epoch distillation finetune, every step kept (tolerance 1) and timed on this CPU;
then the pruned model is exported, timed and scored on the test split as finalize does.

    python bench/prune_divisor_accuracy.py --device cpu-fast      # ~5 minutes per divisor

Resumable (finalize's steps); results in bench/results/prune_divisor_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from _setup import log

from edgenas import pipeline
from edgenas.config import PruneConfig, load_config
from edgenas.finalize import finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import make_backend
from edgenas.layout import ModelCard
from edgenas.nas import load_supernet, set_threads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--device", default="cpu-fast", help="the headline device whose distilled model is pruned")
    p.add_argument("--divisors", default="8,16")
    p.add_argument("--workdir", default="runs/bench_prune_divisor")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    set_threads(0)
    config = load_config(args.config)
    source = config.layout.finalize(args.device)
    if not (source / "distilled.pt").exists():
        raise SystemExit(f"{source}/distilled.pt is missing: run bench/deploy.py first")
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    arch = space.parse(ModelCard.load(source / "model_card.json").arch)
    supernet = load_supernet(space, config.layout.supernet)
    results = {"device": args.device, "arch": str(arch), "divisors": {}}
    for divisor in (int(d) for d in args.divisors.split(",")):
        out = Path(args.workdir) / f"{args.device}-d{divisor}"
        _seed_with_distilled(source, out)
        # every step kept and timed (a latency target no model meets), so both divisors take the same steps
        prune = PruneConfig(step=0.1, max_steps=2, divisor=divisor, tolerance=1.0, latency_target_ms=1e-3)
        log(f"divisor {divisor}: {out}")
        card = finalize_arch(
            arch,
            space=space,
            supernet=supernet,
            splits=splits,
            backend=make_backend("local-cpu", threads=1),
            out_dir=out,
            config=dataclasses.replace(config.finalize, prune=prune),
            device=args.device,
            augment=config.data.augmentations,
            data=pipeline.data_record(config),
            progress=False,
        )
        by = {s["stage"]: s for s in card["stages"]}
        results["divisors"][divisor] = {
            "prune_steps": card["prune_steps"],
            "distilled": by["distilled"],
            "pruned": by["pruned"],
        }
    atomic_write_json(Path(args.out) / "prune_divisor_accuracy.json", results)
    md = _markdown(results, args)
    atomic_write_text(Path(args.out) / "prune_divisor_accuracy.md", md)
    print(md)


def _seed_with_distilled(source: Path, out: Path) -> None:
    """The headline's searched and distilled steps (models and records), reused by finalize as they match."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("searched.pt", "searched.json", "distilled.pt", "distilled.json", "distill_epochs.json"):
        if not (out / name).exists():
            shutil.copy2(source / name, out / name)


def _markdown(results: dict, args: argparse.Namespace) -> str:
    rows = []
    for divisor, r in results["divisors"].items():
        for s in r["prune_steps"]:
            rows.append(
                f"| {divisor} | {s['step']} | {s['params']:,} | {s['accuracy'] * 100:.2f} % | {s['latency_ms']:.3f} |"
            )
    tests = "; ".join(
        f"divisor {d}: {r['pruned']['test_accuracy'] * 100:.2f} % at {r['pruned']['latency_ms']:.3f} ms "
        f"(distilled {r['distilled']['test_accuracy'] * 100:.2f} % at {r['distilled']['latency_ms']:.3f} ms)"
        for d, r in results["divisors"].items()
    )
    return (
        "\n".join(
            [
                "# What pruning to the runtime's channel block costs in accuracy",
                "",
                f"`python bench/prune_divisor_accuracy.py --device {args.device}`: the headline run's `{args.device}` "
                f"distilled model (`{results['arch']}`) pruned by finalize's pruning, 2 steps of 10 % of the channels, "
                "each with its 1-epoch distillation finetune, every step kept; validation accuracy (3,000 images, "
                "± 0.9 pt) and latency (ONNX Runtime fp32, 1 thread, batch 1, this CPU) after each step:",
                "",
                "| divisor | step | parameters | validation accuracy | latency (ms) |",
                "|---|---|---|---|---|",
                *rows,
                "",
                f"Test (10,000 images, ± 0.5 pt), the pruned model as finalize exports and times it: {tests}.",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
