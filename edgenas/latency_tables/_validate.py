"""Validation: predicted vs measured end-to-end latency on subnets spread over the range.

Subnets are drawn so that their predicted latencies cover the space evenly (many random
archs, then evenly spaced quantiles of the raw prediction), exported whole, and timed with
the table's protocol beside the same reference model. Half of them (alternating along the
latency range) fit the calibration, the other half are held out and judged: share within
+-5 % and +-10 %, MAPE, Kendall tau. Predicted and measured latencies are compared in
units of the reference model (each measurement divided by the reference timed in the same
rounds), which cancels the machine's drift between the table's build and the validation;
the same figures in raw milliseconds are reported beside them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from edgenas.latency_tables._backend import MeasurementBackend
from edgenas.latency_tables._build import restrict_space
from edgenas.latency_tables._models import arch_model, noop_for, reference_model
from edgenas.latency_tables._predict import Predictor, fit_calibration
from edgenas.latency_tables._protocol import Protocol
from edgenas.latency_tables._table import LatencyTable
from edgenas.progress import progress as progress_bar
from edgenas.search_spaces import Arch, Space

__all__ = ["accuracy_metrics", "sample_spread", "validate_table"]


def accuracy_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    err = p / m - 1
    return {
        "n": int(len(m)),
        "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "mape_pct": float(np.mean(np.abs(err)) * 100),
        "mean_error_pct": float(np.mean(err) * 100),
        "kendall_tau": float(kendalltau(p, m)[0]) if len(m) > 1 else float("nan"),
    }


def sample_spread(predictor: Predictor, n: int, rng: np.random.Generator, pool: int = 20) -> list[Arch]:
    """``n`` distinct archs whose raw predictions are evenly spread over the space's range."""
    space = predictor.space
    seen: dict[str, tuple[float, Arch]] = {}
    for arch in (space.largest(), space.smallest()):
        seen[str(arch)] = (predictor.predict_rel(arch, calibrated=False), arch)
    for _ in range(n * pool):
        arch = space.sample(rng)
        if str(arch) not in seen:
            seen[str(arch)] = (predictor.predict_rel(arch, calibrated=False), arch)
    ranked = sorted(seen.values(), key=lambda x: x[0])
    if len(ranked) < n:
        raise ValueError(f"space has only {len(ranked)} distinct archs here, fewer than n={n}")
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, n)).astype(int))
    return [ranked[i][1] for i in picks]


def validate_table(
    path: str | os.PathLike,
    backend: MeasurementBackend,
    *,
    n: int = 80,
    holdout: float = 0.5,
    resolutions: Sequence[int] | None = None,
    widths: Sequence[float] | None = None,
    batch_size: int = 24,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``n`` subnets end to end, fit and store the calibration, return the report."""
    if n < 8 or not 0.1 <= holdout <= 0.9:
        raise ValueError(f"validation needs n >= 8 subnets and holdout in [0.1, 0.9], got n={n}, holdout={holdout}")
    path = Path(path)
    table = LatencyTable.load(path)
    table.check_device(backend.fingerprint(), f"latency table {str(path)!r} vs this device")
    precision = table.header["precision"]
    protocol = Protocol(**table.header["protocol"])
    full = Predictor(dataclasses.replace(table, calibration=None))
    cov = table.header["coverage"]
    space = restrict_space(full.space, resolutions or cov["resolutions"], widths or cov["widths"])
    predictor = Predictor(dataclasses.replace(table, calibration=None), space)
    archs = sample_spread(predictor, n, np.random.default_rng(seed))
    started = time.time()
    measured_rel, measured_ms = _measure_archs(space, archs, precision, backend, protocol, batch_size, progress)
    idx = np.arange(len(archs))
    held = np.floor((idx + 1) * holdout) > np.floor(idx * holdout)
    feats = [predictor.features(a) for a in archs]
    table.calibration = fit_calibration([feats[i] for i in idx[~held]], measured_rel[~held])
    calibrated = Predictor(table, space)
    pred_rel = np.array([calibrated.predict_rel(a) for a in archs])
    raw_rel = np.array([f["t"] for f in feats])
    ref_ms = table.header["reference_ms"]
    report = {
        "table": str(path),
        "space": space.name,
        "precision": precision,
        "device": table.header["device"],
        "resolutions": list(space.resolutions),
        "widths": list(space.widths),
        "n_calibration": int((~held).sum()),
        "n_heldout": int(held.sum()),
        "calibration": table.calibration,
        **_heldout_metrics(pred_rel[held], raw_rel[held], measured_rel[held], measured_ms[held], ref_ms),
        "seconds": time.time() - started,
        "protocol": protocol.to_dict(),
        "rows": _rows(archs, held, pred_rel * ref_ms, measured_rel * ref_ms, measured_ms, raw_rel * ref_ms),
    }
    table.validation = {k: v for k, v in report.items() if k != "rows"}
    table.save(path)
    return report


def _rows(
    archs: list[Arch],
    held: np.ndarray,
    predicted_ms: np.ndarray,
    measured_ms: np.ndarray,
    raw_ms: np.ndarray,
    uncalibrated_ms: np.ndarray,
) -> list[dict[str, Any]]:
    """One row per subnet: its split, predicted and measured ms (drift-corrected and raw), the plain sum."""
    return [
        {
            "arch": str(a),
            "split": "heldout" if h else "calibration",
            "predicted_ms": float(p),
            "measured_ms": float(m),
            "measured_raw_ms": float(r),
            "uncalibrated_ms": float(u),
        }
        for a, h, p, m, r, u in zip(archs, held, predicted_ms, measured_ms, raw_ms, uncalibrated_ms)
    ]


def _heldout_metrics(
    predicted: np.ndarray, uncalibrated: np.ndarray, measured: np.ndarray, measured_ms: np.ndarray, ref_ms: float
) -> dict[str, dict[str, float]]:
    """The held-out subnets' errors: calibrated and uncalibrated (reference units), and in raw milliseconds."""
    return {
        "heldout": accuracy_metrics(predicted, measured),
        "heldout_uncalibrated": accuracy_metrics(uncalibrated, measured),
        "heldout_raw_ms": accuracy_metrics(predicted * ref_ms, measured_ms),
    }


def _measure_archs(
    space: Space,
    archs: list[Arch],
    precision: str,
    backend: MeasurementBackend,
    protocol: Protocol,
    batch_size: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Every arch's end-to-end timing, in batches: (relative to the reference model, milliseconds)."""
    fmt = backend.format
    reference, noop = reference_model(precision, fmt), noop_for(fmt)
    rel, ms = [], []
    with progress_bar(total=len(archs), desc=f"validate {precision}", unit="net", disable=not progress) as bar:
        for i in range(0, len(archs), batch_size):
            batch = archs[i : i + batch_size]
            models = [arch_model(space, a, precision, fmt) for a in batch]
            timings, _, _ = backend.measure(models, reference, protocol, noop)
            rel += [t.rel for t in timings]
            ms += [t.ms for t in timings]
            bar.update(len(batch))
    return np.asarray(rel), np.asarray(ms)
