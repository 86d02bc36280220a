"""Latency prediction: one walk over the arch summing table entries, then the calibration.

Raw prediction, in units of the table's reference model::

    t = sum over blocks of (rel_block - rel_noop) + rel_noop

i.e. each block's entry less the fixed per-call cost that timing it alone added, plus
that cost once for the whole network. Summed blocks miss what only a whole network does
(blocks timed alone keep their weights and activations in cache; whole networks evict
them), so a calibration fitted on end-to-end measurements maps the raw sum to the
measured latency: a linear model on ``t``, the parameter count (cache pressure) and a
constant, the feature set chosen by leave-one-out error. Milliseconds are reference units
times the reference model's latency stored in the header.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgenas.latency_tables._table import FINISHED_KEYS, LatencyTable
from edgenas.search_spaces import Arch, BlockSpec, Space

__all__ = ["FEATURE_SETS", "MissingEntryError", "Predictor", "fit_calibration"]

FEATURE_SETS: tuple[tuple[str, ...], ...] = (("t",), ("t", "one"), ("t", "params", "one"))


class MissingEntryError(LookupError):
    """The table has no entry for a block the arch needs."""


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Weighted by 1/y so the fit minimises relative, not absolute, error.
    w = 1.0 / y
    return np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]


def fit_calibration(features: Sequence[dict[str, float]], measured: Sequence[float]) -> dict[str, Any]:
    """Fit measured ~ features for each candidate feature set; keep the best by leave-one-out MAPE."""
    y = np.asarray(measured, dtype=float)
    if len(y) < 4:
        raise ValueError(f"a calibration needs at least 4 measured subnets, got {len(y)}")
    best: dict[str, Any] | None = None
    for names in FEATURE_SETS:
        x = np.array([[f[n] for n in names] for f in features], dtype=float)
        if len(y) <= len(names) + 2:
            continue
        errors = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = _solve(x[keep], y[keep])
            errors.append(abs(float(x[i] @ coef) / y[i] - 1))
        mape = float(np.mean(errors))
        if best is None or mape < best["loo_mape"] - 1e-4:  # prefer the simpler model on ties
            best = {"features": list(names), "coef": _solve(x, y).tolist(), "loo_mape": mape, "n": len(y)}
    assert best is not None
    return best


class Predictor:
    """Predicts an arch's latency from a table (and its calibration, when it has one)."""

    def __init__(self, table: LatencyTable, space: Space | None = None):
        unfinished = [k for k in FINISHED_KEYS if k not in table.header]
        if unfinished:
            raise ValueError(f"the latency table is not finished (its header has no {unfinished}): resume its "
                             "build with the same `edgenas lut build` command")  # fmt: skip
        self.table = table
        self.space = space if space is not None else Space.from_dict(table.header["space_def"])
        if self.space.name != table.header["space"]:
            raise ValueError(
                f"latency table is for space {table.header['space']!r}, not {self.space.name!r}"
            )
        self.noop = float(table.header["noop_rel"])
        self.reference_ms = float(table.header["reference_ms"])
        self._entries: dict[BlockSpec, tuple[float, float]] = {
            BlockSpec.from_key(k): (e["rel"] - self.noop, e["params"] / 1e6) for k, e in table.entries.items()
        }
        cal = table.calibration
        self._cal = (cal["features"], np.asarray(cal["coef"])) if cal else None

    def _missing(self, spec: BlockSpec, arch: Arch) -> MissingEntryError:
        h = self.table.header
        return MissingEntryError(
            f"latency table has no entry {spec.key!r} needed by {arch}; measure it with: edgenas lut build "
            f"--space {h['space']} --device {h['device']} --precision {h['precision']} --threads {h['threads']} "
            f"--out TABLE (an existing table is resumed and extended)"
        )

    def features(self, arch: Arch) -> dict[str, float]:
        t, params = self.noop, 0.0
        entries = self._entries
        for spec in self.space.block_specs(arch):
            hit = entries.get(spec)
            if hit is None:
                raise self._missing(spec, arch)
            t += hit[0]
            params += hit[1]
        return {"t": t, "params": params, "one": 1.0}

    def predict_rel(self, arch: Arch, *, calibrated: bool = True) -> float:
        f = self.features(arch)
        if not calibrated or self._cal is None:
            return f["t"]
        names, coef = self._cal
        return float(sum(f[n] * c for n, c in zip(names, coef)))

    def predict(self, arch: Arch, *, calibrated: bool = True) -> float:
        """Predicted latency in milliseconds."""
        return self.predict_rel(arch, calibrated=calibrated) * self.reference_ms

    def breakdown(self, arch: Arch) -> list[tuple[str, float]]:
        """(block key, milliseconds) per block, before calibration."""
        out = []
        for spec in self.space.block_specs(arch):
            hit = self._entries.get(spec)
            if hit is None:
                raise self._missing(spec, arch)
            out.append((spec.key, hit[0] * self.reference_ms))
        return out
