"""Validation: predicted vs measured end-to-end latency on subnets spread over the range.

Subnets are drawn so that their predicted latencies cover the space evenly (many random
archs, then evenly spaced quantiles of the raw prediction), exported whole, and timed with
the table's protocol beside the same reference model, ``repeats`` times (3), each time in
batches of another random mix, keeping each subnet's median. A batch can read slow or
fast as a whole (the reference timed in another state of a shared machine than its
companions): in batches of neighbours along the latency range, that shift was a slope the
calibration learnt (OpenVINO on an AMD EPYC VM: held out 65 % within +-10 %, the large
archs +10-29 %, the middle ones -10-15 %); mixed and repeated, it averages out, and how far
the repeats disagree says how noisy the machine was. Half of the subnets (alternating along
the latency range) fit the calibration, the other half are held out and judged: share within
+-5 % and +-10 %, MAPE, Kendall tau. Predicted and measured latencies are compared in
units of the reference model (each measurement divided by the reference timed in the same
rounds), which cancels the machine's drift between the table's build and the validation;
the same figures in raw milliseconds are reported beside them. Where the table had a calibration
already, the report says how that one reads the new subnets (measured over predicted, the median):
a validation made while the machine ran whole networks at another speed against the reference
has repeats that agree with each other, and only another validation shows it.

A share of the subnets (``pruned``, a quarter by default, as many calibrating as held out) is
measured with part of its channels pruned as finalize prunes (L1, 10-40 %, multiples of 8; the
two fastest archs by 40 %): finalize deploys pruned models, whose channel counts no arch of
the space has and whose blocks the predictor estimates, so the calibration is fitted and
judged on them too, down to the smallest model finalize can deploy. Fitted
on unpruned archs alone, a calibration extrapolates to them: OpenVINO's (1.46 x the blocks'
sum less 0.21 per 100,000 activation elements at their edges) predicted the smallest arch,
pruned by 30 %, 20 % under its measured time, ncnn's 42 % under, while the table's own
entries summed to within 10 % of it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from edgenas.latency_tables._backend import MeasurementBackend
from edgenas.latency_tables._build import restrict_space
from edgenas.latency_tables._models import arch_model, noop_for, pruned_arch_model, reference_model
from edgenas.latency_tables._predict import MissingEntryError, Predictor, fit_calibration
from edgenas.latency_tables._protocol import Protocol
from edgenas.latency_tables._table import LatencyTable
from edgenas.progress import progress as progress_bar
from edgenas.search_spaces import Arch, BlockSpec, Space

__all__ = ["accuracy_metrics", "sample_spread", "validate_table"]

logger = logging.getLogger(__name__)

# One timing of a subnet straying this far from its median, for the median subnet, means a noisy machine:
# on an AMD EPYC VM quiet validations strayed 0.5-0.6 %; one with a busy neighbour 4.3 %, and its calibration
# predicted 87 % of unseen subnets within 10 % where a quiet one's predicted 100 %.
NOISY_REPEAT_DEVIATION = 0.02
# The most a validation subnet is pruned (finalize's pruning stops where validation accuracy drops; the
# benches prune by 30 %).
MAX_PRUNED = 0.4
# The table's previous calibration reading a new validation's subnets this far off (measured over predicted, the
# median) means one of the two validations ran in another state of the machine. OpenVINO int8 on an AMD EPYC VM:
# one validation's subnets ran 3.5 % slower than in two made a session later, its reference only 1 % slower, and
# its repeats agreed (1.1 %): its calibration read every later timing of the same files 3-6 % slow, while the two
# later ones agreed within 1 % and read them within 3 %.
LEVEL_SHIFT = 0.03


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
    pruned: float = 0.25,
    repeats: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``n`` subnets end to end (the share ``pruned`` of them pruned), fit and store the calibration,
    return the report."""
    _check_settings(n, holdout, pruned, repeats)
    path = Path(path)
    table = LatencyTable.load(path)
    table.check_device(backend.fingerprint(), f"latency table {str(path)!r} vs this device")
    precision = table.header["precision"]
    protocol = Protocol(**table.header["protocol"])
    space = _validation_space(table, resolutions, widths)
    predictor = Predictor(dataclasses.replace(table, calibration=None), space)
    rng = np.random.default_rng(seed)
    archs = sample_spread(predictor, n, rng)
    shares = _prune_shares(len(archs), pruned, rng)
    started = time.time()
    models, specs, shares = _export(space, archs, shares, predictor, backend.format, progress)
    rel, ms = _measure(models, precision, backend, protocol, batch_size, repeats, rng, progress)
    measured_rel, measured_ms = np.median(rel, axis=0), np.median(ms, axis=0)
    held = np.floor((np.arange(len(archs)) + 1) * holdout) > np.floor(np.arange(len(archs)) * holdout)
    feats = [predictor.specs_features(s) for s in specs]
    previous_level = _previous_level(table, space, specs, measured_rel)
    table.calibration = fit_calibration([f for f, h in zip(feats, held) if not h], measured_rel[~held])
    ref_ms = table.header["reference_ms"]
    pred_rel = _predicted_rel(table, space, specs)
    raw_rel = np.array([f["t"] for f in feats])
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
        **_repeats_and_pruned(rel, measured_rel, pred_rel, held, np.array(shares) > 0),
        "previous_calibration_level": previous_level,
        "seconds": time.time() - started,
        "protocol": protocol.to_dict(),
        "rows": _rows(archs, shares, held, pred_rel * ref_ms, measured_rel * ref_ms, measured_ms, raw_rel * ref_ms),
    }
    _warn_if_unreliable(report)
    table.validation = {k: v for k, v in report.items() if k != "rows"}
    table.save(path)
    return report


def _validation_space(table: LatencyTable, resolutions: Sequence[int] | None, widths: Sequence[float] | None) -> Space:
    """The table's space at the given resolutions and widths (default: those the table measured)."""
    cov = table.header["coverage"]
    full = Predictor(dataclasses.replace(table, calibration=None)).space
    return restrict_space(full, resolutions or cov["resolutions"], widths or cov["widths"])


def _check_settings(n: int, holdout: float, pruned: float, repeats: int) -> None:
    if n < 8 or not 0.1 <= holdout <= 0.9 or not 0.0 <= pruned <= 0.5 or repeats < 1:
        raise ValueError(
            f"validation needs n >= 8 subnets, holdout in [0.1, 0.9], pruned in [0, 0.5] and repeats >= 1, got "
            f"n={n}, holdout={holdout}, pruned={pruned}, repeats={repeats}"
        )


def _repeats_and_pruned(
    rel: np.ndarray, measured_rel: np.ndarray, pred_rel: np.ndarray, held: np.ndarray, is_pruned: np.ndarray
) -> dict[str, Any]:
    """How far one timing of a subnet strays from its median (relative to the reference; the median over
    subnets), and the pruned subnets among the held-out judged on their own."""
    both = held & is_pruned
    return {
        "repeats": len(rel),
        "repeat_deviation": float(np.median(np.abs(rel / measured_rel - 1))),
        "n_pruned": int(is_pruned.sum()),
        "heldout_pruned": accuracy_metrics(pred_rel[both], measured_rel[both]) if both.any() else None,
    }


def _previous_level(
    table: LatencyTable, space: Space, specs: list[tuple[BlockSpec, ...]], measured_rel: np.ndarray
) -> float | None:
    """Measured over predicted by the table's calibration before this validation (the median over its subnets);
    None where the table had none."""
    if not table.calibration:
        return None
    return float(np.median(measured_rel / _predicted_rel(table, space, specs)))


def _predicted_rel(table: LatencyTable, space: Space, specs: list[tuple[BlockSpec, ...]]) -> np.ndarray:
    """Each subnet's prediction by the table's calibration, in units of its reference model."""
    predictor = Predictor(table, space)
    return np.array([predictor.predict_specs(s) for s in specs]) / table.header["reference_ms"]


def _warn_if_unreliable(report: dict[str, Any]) -> None:
    if report["repeats"] > 1 and report["repeat_deviation"] > NOISY_REPEAT_DEVIATION:
        logger.warning(
            "validation: the machine was noisy (a timing strayed %.1f %% from its subnet's median; above %.0f %% "
            "is noise): the calibration may be off; validate again when nothing else runs",
            report["repeat_deviation"] * 100,
            NOISY_REPEAT_DEVIATION * 100,
        )
    level = report["previous_calibration_level"]
    if level is not None and abs(level - 1) > LEVEL_SHIFT:
        logger.warning(
            "validation: the table's previous calibration reads these subnets %+.1f %% (measured over predicted, "
            "median; more than %.0f %% means the machine ran whole networks at another speed against the reference "
            "in one of the two validations): validate again until two in a row agree (each validation stores its "
            "own calibration)",
            (level - 1) * 100,
            LEVEL_SHIFT * 100,
        )


def _prune_shares(n: int, share: float, rng: np.random.Generator) -> list[float]:
    """Per subnet, the share of channels to prune (0: none): ``share`` of the subnets, taken in neighbouring
    pairs along the latency range so that as many calibrate as are held out, each pruned by 10-40 %. The
    first pair, the fastest archs, is pruned by 40 %: finalize deploys the smallest models the space gives
    pruned, below every arch, where a calibration fitted above them extrapolated (OpenVINO int8:
    the smallest arch pruned by 30 % ran 12-14 % under its prediction, its unpruned files within 2 %)."""
    shares = [0.0] * n
    for i in range(n):
        pair = i // 2
        if np.ceil((pair + 1) * share) > np.ceil(pair * share):
            shares[i] = MAX_PRUNED if pair == 0 else float(np.round(rng.uniform(0.1, MAX_PRUNED), 2))
    return shares


def _rows(
    archs: list[Arch],
    shares: list[float],
    held: np.ndarray,
    predicted_ms: np.ndarray,
    measured_ms: np.ndarray,
    raw_ms: np.ndarray,
    uncalibrated_ms: np.ndarray,
) -> list[dict[str, Any]]:
    """One row per subnet: its split, the share of its channels pruned, predicted and measured ms
    (drift-corrected and raw), the plain sum."""
    return [
        {
            "arch": str(a),
            "pruned": s,
            "split": "heldout" if h else "calibration",
            "predicted_ms": float(p),
            "measured_ms": float(m),
            "measured_raw_ms": float(r),
            "uncalibrated_ms": float(u),
        }
        for a, s, h, p, m, r, u in zip(archs, shares, held, predicted_ms, measured_ms, raw_ms, uncalibrated_ms)
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


def _export(
    space: Space,
    archs: list[Arch],
    shares: list[float],
    predictor: Predictor,
    fmt: str,
    progress: bool,
) -> tuple[list[bytes], list[tuple[BlockSpec, ...]], list[float]]:
    """Every subnet exported: the models, the blocks each runs and the share of channels pruned (0 where the
    table cannot estimate a pruned block)."""
    precision = predictor.table.header["precision"]
    models, specs, kept = [], [], []
    with progress_bar(total=len(archs), desc=f"export {precision}", unit="net", disable=not progress) as bar:
        for arch, share in zip(archs, shares):
            model, blocks, share = _subnet_model(space, arch, share, predictor, precision, fmt)
            models.append(model)
            specs.append(blocks)
            kept.append(share)
            bar.update(1)
    return models, specs, kept


def _measure(
    models: list[bytes],
    precision: str,
    backend: MeasurementBackend,
    protocol: Protocol,
    batch_size: int,
    repeats: int,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Every model timed ``repeats`` times, each time in batches of a new random mix: (relative to the
    reference model, milliseconds), one row per repeat."""
    fmt = backend.format
    reference, noop = reference_model(precision, fmt), noop_for(fmt)
    rel, ms = np.zeros((repeats, len(models))), np.zeros((repeats, len(models)))
    total = repeats * len(models)
    with progress_bar(total=total, desc=f"validate {precision}", unit="net", disable=not progress) as bar:
        for r in range(repeats):
            order = rng.permutation(len(models))
            for i in range(0, len(order), batch_size):
                batch = order[i : i + batch_size]
                timings, _, _ = backend.measure([models[j] for j in batch], reference, protocol, noop)
                rel[r, batch] = [t.rel for t in timings]
                ms[r, batch] = [t.ms for t in timings]
                bar.update(len(batch))
    return rel, ms


def _subnet_model(
    space: Space, arch: Arch, share: float, predictor: Predictor, precision: str, fmt: str
) -> tuple[bytes, tuple[BlockSpec, ...], float]:
    """The exported subnet, its blocks and its pruned share; unpruned where a pruned block cannot be estimated
    (fewer than two entries of its shape: a tiny space) or where the share pruned nothing (every layer too narrow
    for it: counts are rounded to the nearest multiple of 8)."""
    if share > 0:
        model, blocks = pruned_arch_model(space, arch, share, precision, fmt)
        if blocks == tuple(space.block_specs(arch)):
            return model, blocks, 0.0
        try:
            predictor.specs_features(blocks)
            return model, blocks, share
        except MissingEntryError:
            pass
    return arch_model(space, arch, precision, fmt), tuple(space.block_specs(arch)), 0.0
