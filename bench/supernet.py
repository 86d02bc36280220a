"""Supernet training on the full Fashion-MNIST: accuracy of its largest and smallest subnets per epoch.

The whole training split (60,000 images; 5 % held out for validation, so 57,000 train),
the official 10,000 test images, the `small` space at ``--resolutions`` (default 24,28:
Fashion-MNIST is 28 px, so 32 px would only upsample), the library's default recipe
(:class:`edgenas.nas.TrainConfig`: sandwich rule with 2 random subnets, in-place
distillation, SGD Nesterov lr 0.1, 1 warm-up epoch then cosine, label smoothing 0.1,
the data set's augmentation: pad-2 random crop + horizontal flip) on the device the
engine picks. After every epoch the largest and the smallest subnet (supernet weights, BN
recalibrated on 8 training batches) are scored on the validation and the test split.

Resumable: the checkpoint lives in ``--workdir``; results are rewritten after every epoch
(bench/results/supernet.{json,md}), so a run cut short still shows its curves. The trained
weights go to bench/results/supernet_fmnist.pt, which bench/ranking.py and bench/deploy.py
read.
Targets: trained in <= 90 minutes on the 2-core CPU, largest >= 92.0 % test, smallest >= 88 %.

    python bench/supernet.py                 # 9 epochs, ~80 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from _setup import bench_space, bench_splits, keep_weights

from edgenas.accelerator import Accelerator
from edgenas.data import resolve_augment
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.nas import SubnetEvaluator, TrainConfig, train_supernet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--resolutions", default="24,28")
    p.add_argument("--train-limit", type=int, default=None, help="fewer training images (smoke runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default="runs/bench_supernet")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work, out = Path(args.workdir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    space = bench_space(args.resolutions)
    splits = bench_splits(args.train_limit)
    augment = resolve_augment("auto", "fashion-mnist")
    config = TrainConfig(epochs=args.epochs, device=args.device, threads=args.threads)
    results_path = out / "supernet.json"

    def score_test(net) -> dict:
        ev = SubnetEvaluator(net, splits, split="test", calib_batches=8, seed=0, accel=Accelerator.of(net))
        return {"test_largest": ev(space.largest()), "test_smallest": ev(space.smallest())}

    def write(history: list[dict], final: bool) -> None:
        train_seconds = sum(h["seconds"] for h in history)
        results = {
            "settings": vars(args),
            "data": splits.describe(),
            "augment": list(augment),
            "config": dataclasses.asdict(config),
            "history": history,
            "train_seconds": train_seconds,
            "final": final,
        }
        atomic_write_json(results_path, results)
        rows = [
            "| epoch | loss (largest) | loss (students) | val largest | val smallest | test largest | test smallest "
            "| images/s | minutes (cumulative) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        total = 0.0
        for h in history:
            total += h["seconds"]
            rows.append(
                f"| {h['epoch']} | {h['loss_largest']:.3f} | {h['loss_students']:.3f} | "
                f"{h['val_largest'] * 100:.2f} % | {h['val_smallest'] * 100:.2f} % | "
                f"{h['test_largest'] * 100:.2f} % | {h['test_smallest'] * 100:.2f} % | "
                f"{h['images_per_second']:.0f} | {total / 60:.1f} |"
            )
        last = history[-1]
        compute = last["compute"]
        lines = [
            f"# Supernet on full Fashion-MNIST ({'finished' if final else 'in progress'}: {len(history)} of "
            f"{args.epochs} epochs)",
            "",
            f"`python bench/supernet.py --epochs {args.epochs}`: space `small` at resolutions {args.resolutions}, "
            f"{splits.describe()['train']:,} training images, {splits.describe()['val']:,} validation, "
            f"{splits.describe()['test']:,} test; augmentation {', '.join(augment)}; on {compute['name']} "
            f"({compute['device']}, {compute['threads']} threads, {compute['precision']}, "
            f"channels_last {compute['channels_last']}). Accuracy: supernet weights, BN recalibrated on 8 "
            "training batches.",
            "",
            *rows,
            "",
            f"Training time: {train_seconds / 60:.1f} minutes (target <= 90). Largest subnet "
            f"{last['test_largest'] * 100:.2f} % test (target >= 92.0 %: "
            f"{'met' if last['test_largest'] >= 0.92 else 'not met'}), smallest {last['test_smallest'] * 100:.2f} % "
            f"(target >= 88 %: {'met' if last['test_smallest'] >= 0.88 else 'not met'}).",
        ]
        atomic_write_text(out / "supernet.md", "\n".join(lines) + "\n")

    ckpt = work / "supernet.pt"
    done: list[dict] = torch.load(ckpt, map_location="cpu", weights_only=False)["history"] if ckpt.exists() else []

    def on_epoch(row: dict, net) -> dict:
        scores = score_test(net)
        print(
            f"[{time.strftime('%H:%M:%S')}] epoch {row['epoch']}: val largest {row['val_largest']:.4f}, "
            f"test {scores}, {row['images_per_second']:.0f} images/s",
            flush=True,
        )
        done.append({**row, **scores})
        write(done, final=len(done) >= args.epochs)
        return scores

    train_supernet(space, splits, config, ckpt, augment=augment, on_epoch=on_epoch, progress=False)
    # the trained weights (no optimiser state) for bench/ranking.py and bench/deploy.py
    keep_weights(ckpt, out / "supernet_fmnist.pt")
    minutes = sum(h["seconds"] for h in done) / 60
    print(f"done: {minutes:.1f} minutes of training; weights in {out / 'supernet_fmnist.pt'}")


if __name__ == "__main__":
    main()
