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

Pruned models have channel counts no arch of the space has. :meth:`Predictor.predict_specs`
with ``estimate=True`` prices such a block by a line (cost vs multiply-adds, fitted
relative) through the table's entries of the same shape (kind, input size, kernel, stride,
SE, activation, residual), which differ in width and expansion; pruning moves a block
along that line. bench/deployed_latency.py checks these estimates on pruned exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgenas.latency_tables._table import FINISHED_KEYS, LatencyTable
from edgenas.search_spaces import Arch, BlockSpec, Space, spec_macs, spec_params

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
        self._lines: dict[tuple, np.ndarray] = {}  # block shape -> (intercept, cost per multiply-add)
        cal = table.calibration
        self._cal = (cal["features"], np.asarray(cal["coef"])) if cal else None

    def _missing(self, spec: BlockSpec, needed_by: object) -> MissingEntryError:
        h = self.table.header
        return MissingEntryError(
            f"latency table has no entry {spec.key!r} needed by {needed_by}; measure it with: edgenas lut build "
            f"--space {h['space']} --device {h['device']} --precision {h['precision']} --threads {h['threads']} "
            f"--out TABLE (an existing table is resumed and extended)"
        )

    def features(self, arch: Arch) -> dict[str, float]:
        return self._features(self.space.block_specs(arch), arch, estimate=False)

    def _features(self, specs: Sequence[BlockSpec], needed_by: object, estimate: bool) -> dict[str, float]:
        t, params = self.noop, 0.0
        for spec in specs:
            hit = self._entries.get(spec)
            if hit is None:
                if not estimate:
                    raise self._missing(spec, needed_by)
                hit = self._estimate(spec)
            t += hit[0]
            params += hit[1]
        return {"t": t, "params": params, "one": 1.0}

    def _estimate(self, spec: BlockSpec) -> tuple[float, float]:
        """(cost, params in millions) of a block the table lacks, from its entries of the same shape."""
        shape = _shape(spec)
        if shape not in self._lines:
            same = [(s, cost) for s, (cost, _) in self._entries.items() if _shape(s) == shape]
            if len(same) < 2:
                raise self._missing(spec, "a pruned model (no two entries of its shape to estimate it from)")
            x = np.array([[1.0, spec_macs(s)] for s, _ in same])
            self._lines[shape] = _solve(x, np.array([c for _, c in same]))
        intercept, slope = self._lines[shape]
        return float(intercept + slope * spec_macs(spec)), spec_params(spec) / 1e6

    def _calibrate(self, f: dict[str, float], calibrated: bool) -> float:
        if not calibrated or self._cal is None:
            return f["t"]
        names, coef = self._cal
        return float(sum(f[n] * c for n, c in zip(names, coef)))

    def predict_specs(self, specs: Sequence[BlockSpec], *, estimate: bool = True, calibrated: bool = True) -> float:
        """Predicted milliseconds of a network given as block specs, e.g. a pruned model's
        (:func:`edgenas.search_spaces.current_specs`); blocks the table lacks are estimated."""
        return self._calibrate(self._features(specs, "a model", estimate), calibrated) * self.reference_ms

    def predict_rel(self, arch: Arch, *, calibrated: bool = True) -> float:
        return self._calibrate(self.features(arch), calibrated)

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


def _shape(spec: BlockSpec) -> tuple:
    """What a block keeps when pruned: all but its channel counts."""
    return (spec.kind, spec.in_size, spec.kernel, spec.stride, spec.se, spec.act, spec.residual)
