"""The space and data the Fashion-MNIST benchmarks share, and their Markdown helper.

bench/finalize.py and bench/multi_device.py reuse the supernet and tables of
bench/search.py, so all three must build exactly the same space and splits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgenas.data import Splits, load_dataset, make_splits
from edgenas.latency_tables import LatencyTable, LocalBackend, Predictor, build_table, validate_table
from edgenas.search_spaces import Space, get_space


def bench_space(resolutions: str) -> Space:
    """The `small` space limited to comma-separated resolutions, e.g. "24,28"."""
    return dataclasses.replace(get_space("small"), resolutions=tuple(int(r) for r in resolutions.split(",")))


def bench_splits(train_limit: int | None) -> Splits:
    return make_splits(load_dataset("fashion-mnist"), val_fraction=0.05, train_limit=train_limit, seed=0)


def bench_predictor(
    space: Space, path: Path, backend: LocalBackend, validate_n: int = 40, precision: str = "fp32"
) -> Predictor:
    """The calibrated predictor of ``space`` on this CPU: the table at ``path`` built and validated if needed."""
    build_table(space, backend, path, precision=precision, progress=False)
    if LatencyTable.load(path).calibration is None:
        validate_table(path, backend, n=validate_n, progress=False)
    return Predictor(LatencyTable.load(path), space)


def md_code(text: str) -> str:
    """Inline code inside a Markdown table cell (a bare | would end the cell)."""
    return "`" + text.replace("|", "\\|") + "`"
