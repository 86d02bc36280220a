"""What the Fashion-MNIST benchmarks share: the space and splits, the start of those built on one supernet,
the recipe they train stand-alone archs with, Markdown helpers and a timestamped log line.

The benches that start from the supernet of bench/supernet.py (deploy, ranking,
references, multi_device, ...) must build exactly the same space and splits: they do it here.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from edgenas.data import Splits, load_dataset, make_splits
from edgenas.distill import atomic_torch_save
from edgenas.latency_tables import LatencyTable, LocalBackend, Predictor, build_table, validate_table
from edgenas.search_spaces import Space, Supernet, get_space

SUPERNET = "bench/results/supernet_fmnist.pt"  # written by bench/supernet.py
LUT_FP32 = "runs/bench_ranking/lut_fp32.json"  # this CPU's fp32 table of the bench space, built where missing


def bench_space(resolutions: str) -> Space:
    """The `small` space limited to comma-separated resolutions, e.g. "24,28"."""
    return dataclasses.replace(get_space("small"), resolutions=tuple(int(r) for r in resolutions.split(",")))


def bench_splits(train_limit: int | None) -> Splits:
    return make_splits(load_dataset("fashion-mnist"), val_fraction=0.05, train_limit=train_limit, seed=0)


def bench_predictor(
    space: Space,
    path: Path,
    backend: LocalBackend,
    validate_n: int = 40,
    precision: str = "fp32",
    device: str = "local-cpu",
    resolutions: tuple[int, ...] | None = None,
) -> Predictor:
    """The calibrated predictor of ``space`` on this CPU: the table at ``path`` built and validated if needed.

    ``resolutions``: a table of ``space`` built at these only (as bench/lut_accuracy.py builds them); the
    predictor then covers those.
    """
    build_table(space, backend, path, device=device, precision=precision, resolutions=resolutions, progress=False)
    if LatencyTable.load(path).calibration is None:
        validate_table(path, backend, n=validate_n, resolutions=resolutions, progress=False)
    return Predictor(LatencyTable.load(path), dataclasses.replace(space, resolutions=resolutions or space.resolutions))


def recipe_fit(epochs: int, seed: int):
    """Stand-alone training with the library's recipe (TrainConfig's optimiser, warm-up + cosine, label
    smoothing, the data set's augmentation) for ``epochs``: how the benches train archs they compare."""
    from edgenas.data import resolve_augment
    from edgenas.distill import FitConfig
    from edgenas.nas import TrainConfig

    recipe = TrainConfig()
    return FitConfig(
        epochs=epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        warmup_epochs=min(recipe.warmup_epochs, epochs / 3),
        label_smoothing=recipe.label_smoothing,
        augment=resolve_augment("auto", "fashion-mnist"),
        seed=seed,
    )


def md_code(text: str) -> str:
    """Inline code inside a Markdown table cell (a bare | would end the cell)."""
    return "`" + text.replace("|", "\\|") + "`"


def add_supernet_args(p: argparse.ArgumentParser, workdir: str | None) -> None:
    """The options of the benches that start from the supernet of bench/supernet.py."""
    p.add_argument("--resolutions", default="24,28")
    p.add_argument("--supernet", default=SUPERNET, help="written by bench/supernet.py")
    p.add_argument("--threads", type=int, default=2, help="torch threads (timings use one ONNX Runtime thread)")
    if workdir is not None:
        p.add_argument("--workdir", default=workdir)
    p.add_argument("--out", default="bench/results")


def supernet_bench(args: argparse.Namespace) -> tuple[Space, Splits, Supernet]:
    """Threads set, ``--workdir`` made (where the bench has one), the bench space, the full splits, the supernet."""
    from edgenas.nas import set_threads

    if getattr(args, "workdir", None):
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    space = bench_space(args.resolutions)
    return space, bench_splits(None), bench_supernet(space, args.supernet)


def bench_supernet(space: Space, path: str) -> Supernet:
    """The supernet at ``path`` for ``space``, which may search fewer of the resolutions it was trained at
    (``--resolutions 28`` on the 24,28 supernet: the tables bench/lut_accuracy.py builds are at one)."""
    import torch

    from edgenas.nas import load_supernet

    trained = tuple(torch.load(path, map_location="cpu", weights_only=False)["space"]["resolutions"])
    if not set(space.resolutions) <= set(trained):
        raise SystemExit(f"--resolutions {space.resolutions} not all among the supernet's {trained} ({path})")
    return load_supernet(dataclasses.replace(space, resolutions=trained), path)


def quiet_optuna() -> None:
    """Optuna's line per trial would drown a bench's log: warnings only (as the edgenas command does)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def device_tag(device: str) -> str:
    """The suffix of a bench's result files for a runtime other than ONNX Runtime, e.g. ``_openvino_cpu``."""
    return "" if device == "local-cpu" else "_" + device.replace(":", "_").lower()


def log(msg: str) -> None:
    """A bench's progress line, timestamped (benches are programs: they print)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def keep_weights(checkpoint: Path, path: Path) -> None:
    """A trained supernet's weights, space, settings and history (no optimiser state: a few MB) at ``path``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    atomic_torch_save({k: state[k] for k in ("space", "config", "model", "history")}, path)
    log(f"supernet kept in {path}")
