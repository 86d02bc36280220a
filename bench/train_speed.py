"""Training speed: one sandwich step of the supernet vs the same four subnets trained alone.

What a sandwich step should cost is what its four subnets (largest, smallest, two random)
cost when each is extracted and trained stand-alone in plain PyTorch: forward, cross-
entropy, backward, SGD step, input batches prepared beforehand. The engine's step is the
real one (:func:`edgenas.nas.sandwich_step` with the optimiser step, gradient
clipping and its data pipeline: uint8 batch -> pad-crop + flip -> float -> resize) on the
device the engine picks. Both are timed interleaved, step by step, over ``--configs`` sets
of four archs and ``--rounds`` rounds, so the machine's drift falls on both alike.

Reported: images/s of the sandwich step (an image is one image through all four
subnets), images/s of the four stand-alone steps (channels_last, as the engine runs, and
NCHW), and the ratio engine / stand-alone time. Targets: >= 175 images/s and <= 1.25x.

    python bench/train_speed.py                       # small space, Fashion-MNIST batches
    python bench/train_speed.py --resolutions 24,28   # the space the Fashion-MNIST benchmarks use
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _setup import bench_space

from edgenas.accelerator import Accelerator
from edgenas.data import ImageData, Splits, batches, load_dataset, make_splits
from edgenas.distill import Optimization
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.nas import TrainConfig, sandwich_step, set_threads
from edgenas.search_spaces import Supernet


def fmnist_or_noise(n: int) -> Splits:
    """Fashion-MNIST training images where installed, else uint8 noise of the same shape (speed is the same)."""
    try:
        return make_splits(load_dataset("fashion-mnist"), train_limit=n, seed=0)
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        data = ImageData(
            "noise",
            rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8),
            np.arange(n) % 10,
            tuple(str(i) for i in range(10)),
        )
        return make_splits(data, seed=0)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", default="24,28,32", help="the small space's resolutions to use")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", type=int, default=6, help="sets of four archs (largest, smallest, 2 random)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    space = bench_space(args.resolutions)
    splits = fmnist_or_noise(4000)
    accel = Accelerator.create(args.device)
    cfg = TrainConfig(batch_size=args.batch_size, device=args.device)
    rng = np.random.default_rng(args.seed)
    largest, smallest = space.largest(), space.smallest()
    configs = [[largest, smallest, space.sample(rng), space.sample(rng)] for _ in range(args.configs)]

    net = accel.module(Supernet(space)).train()
    optim = Optimization(net, cfg, total_steps=10**6, warmup_steps=0, accel=accel)
    data_rng = np.random.default_rng(args.seed)

    def engine_step(archs) -> None:
        x, y = next(
            batches(
                splits.train,
                batch_size=args.batch_size,
                resolution=splits.train.size,
                channels=1,
                mean=splits.mean,
                std=splits.std,
                shuffle=True,
                rng=data_rng,
                drop_last=True,
                augment=("crop", "flip"),
                accel=accel,
            )
        )
        optim.zero_grad()
        sandwich_step(net, x, y, archs[1:], archs[0], cfg, accel, optim.backward)
        optim.step()
        if accel.device.type == "cuda":
            torch.cuda.synchronize()

    # the four subnets alone, in plain PyTorch, on the same device: channels_last and NCHW
    x_cpu = next(
        batches(
            splits.train,
            batch_size=args.batch_size,
            resolution=splits.train.size,
            channels=1,
            mean=splits.mean,
            std=splits.std,
        )
    )[0]
    y = torch.from_numpy(splits.train.labels[: args.batch_size]).to(accel.device)
    alone = {}
    for layout in ("channels_last", "nchw"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for c, archs in enumerate(configs):
            for j, arch in enumerate(archs):
                model = net.extract(arch).to(device=accel.device, memory_format=fmt).train()
                xin = F.interpolate(x_cpu, size=(arch.resolution,) * 2, mode="bilinear", align_corners=False)
                alone[layout, c, j] = (
                    model,
                    torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                    xin.to(accel.device).contiguous(memory_format=fmt),
                )

    def alone_step(layout: str, c: int) -> None:
        for j in range(4):
            model, sgd, xin = alone[layout, c, j]
            sgd.zero_grad(set_to_none=True)
            F.cross_entropy(model(xin), y).backward()
            sgd.step()
        if accel.device.type == "cuda":
            torch.cuda.synchronize()

    for c, archs in enumerate(configs):  # warm-up: every path once
        engine_step(archs)
        alone_step("channels_last", c)
        alone_step("nchw", c)
    times = {"engine": [], "channels_last": [], "nchw": []}
    for r in range(args.rounds):
        for c in np.random.default_rng([args.seed, r]).permutation(len(configs)):
            times["engine"].append(timed(lambda c=c: engine_step(configs[c])))
            times["channels_last"].append(timed(lambda c=c: alone_step("channels_last", c)))
            times["nchw"].append(timed(lambda c=c: alone_step("nchw", c)))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {args.batch_size * len(v) / sum(v):.0f} images/s" for k, v in times.items()),
            flush=True,
        )

    ips = {k: args.batch_size * len(v) / sum(v) for k, v in times.items()}
    per_config = [e / a for e, a in zip(times["engine"], times["channels_last"])]
    spread = {"median": float(np.median(per_config)), "min": float(min(per_config)), "max": float(max(per_config))}
    results = {
        "settings": vars(args),
        "compute": accel.describe(),
        "space": space.to_dict(),
        "configs": [[str(a) for a in archs] for archs in configs],
        "images_per_second": ips,
        "engine_vs_alone": sum(times["engine"]) / sum(times["channels_last"]),
        "engine_vs_alone_per_step": spread,
        "channels_last_gain": sum(times["nchw"]) / sum(times["channels_last"]),
        "step_seconds": times,
    }
    out = Path(args.out)
    tag = "" if args.resolutions == "24,28,32" else "_r" + args.resolutions.replace(",", "-")
    atomic_write_json(out / f"train_speed{tag}.json", results)
    lines = [
        f"# Training speed: sandwich step vs its four subnets alone ({accel.describe()['name']}, "
        f"{accel.describe()['device']}, {args.threads} threads)",
        "",
        f"Space `small` at resolutions {args.resolutions}, batch {args.batch_size}, {args.configs} sets of four archs "
        f"(largest, smallest, 2 random) x {args.rounds} rounds, interleaved step by step.",
        "",
        "| what | images/s | time vs the four alone (channels_last) |",
        "|---|---|---|",
        f"| sandwich step (engine, incl. data pipeline and augmentation) | {ips['engine']:.0f} | "
        f"{results['engine_vs_alone']:.2f}x |",
        f"| the four subnets alone, channels_last | {ips['channels_last']:.0f} | 1.00x |",
        f"| the four subnets alone, NCHW | {ips['nchw']:.0f} | {results['channels_last_gain']:.2f}x |",
        "",
        f"Per step, engine / alone: median {spread['median']:.2f}x (min {spread['min']:.2f}x, "
        f"max {spread['max']:.2f}x). "
        f"Targets: >= 175 images/s ({'met' if ips['engine'] >= 175 else 'not met'}), <= 1.25x "
        f"({'met' if results['engine_vs_alone'] <= 1.25 else 'not met'}).",
    ]
    atomic_write_text(out / f"train_speed{tag}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
