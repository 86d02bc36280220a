"""Latency prediction: one walk over the arch summing table entries, then the calibration.

Raw prediction, in units of the table's reference model::

    t = sum over blocks of (rel_block - rel_noop) + rel_noop

i.e. each block's entry less the fixed per-call cost that timing it alone added, plus
that cost once for the whole network. Summed blocks miss what only a whole network does
(blocks timed alone keep their weights and activations in cache; whole networks evict
them), so a calibration fitted on end-to-end measurements maps the raw sum to the
measured latency: a linear model on ``t``, the parameter count (cache pressure), the
activations at the blocks' edges, the number of blocks and a constant, the feature set chosen by
leave-one-out error. The edges: a runtime that computes in its own layout (OpenVINO's and ONNX Runtime's
blocked nChw16c, XNNPACK's NHWC) converts a lone block's input and output to and from it,
which a whole network does once; OpenVINO's profile of one arch shows 17 us of Reorder
nodes in its blocks timed alone and none in the network, and its wide archs ran 5-12 %
under the plain sum where narrow ones ran over it. The number of blocks: on an Intel Xeon with AMX,
OpenVINO's networks ran 1.6x their blocks' sum, narrow archs 1.2x their calibrated prediction and
wide ones 0.9x under a scale alone, as a fixed cost per block in the network would make them
(fitted on 30 files, leave-one-out: 100 % within ±10 % with a term per block, 47 % with a scale
alone; a validation with the term: 70 % of unseen files, from 63 %). Milliseconds are reference units
times the reference model's latency stored in the header.

Pruned models have channel counts no arch of the space has. :meth:`Predictor.predict_specs`
with ``estimate=True`` prices such a block by a line (cost vs multiply-adds, fitted
relative) through the table's entries of the same shape (kind, input size, kernel, stride,
SE, activation, residual), which differ in width and expansion; pruning moves a block
along that line. The multiply-adds are priced as the runtime's kernels charge for channels
(:class:`ChannelPricing`): counts rounded up to its channel block (ONNX Runtime's NCHWc
kernels compute 8 or 16 channels at a time, by the CPU's vector width), and a depthwise
convolution whose count leaves a short tail over the vector width charged more per
multiply-add where the runtime then runs it at a narrower pack (ncnn on an AVX-512 EPYC: a
7x7 one of 72 channels took longer than one of 96, and pruned 7x7 blocks of such counts ran
19 % over their estimates). The pricing is the one that predicts the table's own entries
best, each left out in turn; on pruned blocks timed alone it cut the mean error from 9.2
to 6.4 % (ncnn fp32), 10.0 to 5.8 % (ONNX Runtime int8), 6.2 to 5.7 % (OpenVINO int8) and
6.8 to 6.4 % (ExecuTorch fp32), and left the other tables' as they were.

A classifier's line is fitted on the hidden widths the table times for the purpose
(:func:`edgenas.latency_tables.table_specs`) and has a term per input channel besides its
multiply-adds: classifiers of half the hidden width took 61-71 % of the full one's time on
ncnn, OpenVINO and ExecuTorch int8, where multiply-adds alone say 50 %. Its hidden layer may
be slowed as a depthwise kernel is: XNNPACK fp32 on an AVX-512 EPYC ran hidden counts 8 or 16
past a multiple of 32 about 1.3x slower as a whole (24 past at full speed), so that a
classifier of 712 hidden units cost as much as one of 1024.
bench/deployed_latency.py checks these estimates on pruned exports.

A calibration holds only over the archs it was fitted on. Random archs of ``small`` stay
under about 1.4 M of its 2.2 M parameters, and beyond what a network's weights leave of a
shared cache the cost jumps rather than grows: on an AVX-512 EPYC the space's largest arch
(8.9 MB fp32) ran 1.09-1.10x its blocks' sum as a user times it and 1.19-1.47x in table
batches, a different figure each batch; an arch of 4.3 MB 0.96-0.98x (bench/cache_cliff.py). So the
calibration keeps the parameter range it was fitted on, and :meth:`Predictor.extrapolation`
names an arch beyond it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgenas.latency_tables._table import FINISHED_KEYS, LatencyTable
from edgenas.search_spaces import Arch, BlockSpec, Space, spec_macs, spec_params

__all__ = ["FEATURE_SETS", "MissingEntryError", "Predictor", "fit_calibration"]

FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    ("t",),
    ("t", "one"),
    ("t", "params", "one"),
    ("t", "edges", "one"),
    ("t", "params", "edges", "one"),
    ("t", "blocks", "one"),
)


class MissingEntryError(LookupError):
    """The table has no entry for a block the arch needs."""


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Weighted by 1/y so the fit minimises relative, not absolute, error.
    w = 1.0 / y
    return np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]


def fit_calibration(features: Sequence[dict[str, float]], measured: Sequence[float]) -> dict[str, Any]:
    """Fit measured ~ features for each candidate feature set; keep the best by leave-one-out MAPE, with the
    range of parameters (millions) it was fitted on."""
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
    params = [f["params"] for f in features]
    return {**best, "params_range": [float(min(params)), float(max(params))]}


class Predictor:
    """Predicts an arch's latency from a table (and its calibration, when it has one)."""

    def __init__(self, table: LatencyTable, space: Space | None = None):
        unfinished = [k for k in FINISHED_KEYS if k not in table.header]
        if unfinished:
            raise ValueError(
                f"the latency table is not finished (its header has no {unfinished}): resume its "
                "build with the same `edgenas lut build` command"
            )
        self.table = table
        self.space = space if space is not None else Space.from_dict(table.header["space_def"])
        if self.space.name != table.header["space"]:
            raise ValueError(f"latency table is for space {table.header['space']!r}, not {self.space.name!r}")
        self.noop = float(table.header["noop_rel"])
        self.reference_ms = float(table.header["reference_ms"])
        self._entries: dict[BlockSpec, tuple[float, float]] = {
            BlockSpec.from_key(k): (e["rel"] - self.noop, e["params"] / 1e6) for k, e in table.entries.items()
        }
        self._lines: dict[tuple, tuple[np.ndarray, tuple[str, ...]]] = {}  # block shape -> (coefficients, terms)
        self._pricing: ChannelPricing | None = None  # how the runtime charges for channels, found when needed
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

    def specs_features(self, specs: Sequence[BlockSpec], *, estimate: bool = True) -> dict[str, float]:
        """The calibration's features of a network given as block specs (a pruned model's: blocks the table
        lacks are estimated)."""
        return self._features(specs, "a model", estimate)

    def _features(self, specs: Sequence[BlockSpec], needed_by: object, estimate: bool) -> dict[str, float]:
        t, params, edges = self.noop, 0.0, 0.0
        for spec in specs:
            edges += edge_elements(spec) / 1e5
            hit = self._entries.get(spec)
            if hit is None:
                if not estimate:
                    raise self._missing(spec, needed_by)
                hit = self._estimate(spec)
            t += hit[0]
            params += hit[1]
        return {"t": t, "params": params, "edges": edges, "blocks": float(len(specs)), "one": 1.0}

    @property
    def channel_pricing(self) -> ChannelPricing:
        """How this table's runtime charges for channel counts (what prices a pruned block), found from its
        entries when first needed."""
        if self._pricing is None:
            self._pricing = _channel_pricing(self._groups())
        return self._pricing

    def _estimate(self, spec: BlockSpec) -> tuple[float, float]:
        """(cost, params in millions) of a block the table lacks, from its entries of the same shape."""
        shape = _shape(spec)
        if shape not in self._lines:
            same = self._groups().get(shape, [])
            if len(same) < 2:
                raise self._missing(spec, "a pruned model (no two entries of its shape to estimate it from)")
            self._lines[shape] = (_line(same, self.channel_pricing), _columns(same, self.channel_pricing))
        coef, columns = self._lines[shape]
        return float(np.dot(_row(spec, self.channel_pricing, columns), coef)), spec_params(spec) / 1e6

    def _groups(self) -> dict[tuple, list[tuple[BlockSpec, float]]]:
        groups: dict[tuple, list[tuple[BlockSpec, float]]] = {}
        for s, (cost, _) in self._entries.items():
            groups.setdefault(_shape(s), []).append((s, cost))
        return groups

    def _calibrate(self, f: dict[str, float], calibrated: bool) -> float:
        if not calibrated or self._cal is None:
            return f["t"]
        names, coef = self._cal
        return float(sum(f[n] * c for n, c in zip(names, coef)))

    def predict_specs(self, specs: Sequence[BlockSpec], *, estimate: bool = True, calibrated: bool = True) -> float:
        """Predicted milliseconds of a network given as block specs, e.g. a pruned model's
        (:func:`edgenas.search_spaces.current_specs`); blocks the table lacks are estimated."""
        return self._calibrate(self.specs_features(specs, estimate=estimate), calibrated) * self.reference_ms

    def extrapolation(self, specs: Sequence[BlockSpec]) -> str | None:
        """Why the calibration does not vouch for a network given as block specs (more parameters than the
        archs it was fitted on), or None where it does or cannot say (no calibration, or one fitted before
        calibrations kept their range)."""
        cal = self.table.calibration
        if not cal or "params_range" not in cal:
            return None
        params = sum(spec_params(s) for s in specs) / 1e6
        fitted = cal["params_range"][1]
        if params <= fitted * 1.1:  # a little past the fitted archs is still their regime
            return None
        return (
            f"its {params:.2f} M parameters exceed the {fitted:.2f} M of the largest arch the calibration was "
            "fitted on: extrapolated (a network whose weights outgrow the cache can run well over its blocks' sum)"
        )

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


CHANNEL_BLOCKS = (8, 16, 32)
# Depthwise multiply-adds are priced apart from the others only where that predicts the table's entries with
# under 0.9x the error: on an AVX-512 EPYC it did for ExecuTorch fp32 (entries 5.1 -> 3.1 %, pruned blocks
# timed alone 5.4 -> 3.9 %), OpenVINO int8 and ONNX Runtime int8; on ncnn's table it lowered the entries'
# error by 3 % and raised its pruned blocks' from 7.4 to 10.3 %.
SPLIT_GAIN = 0.9
SLOW_FACTORS = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
_DEPTHWISE_KINDS = ("ir", "ds")
_CLASSIFIER = 0  # the kernel :meth:`ChannelPricing.slowing` takes for the classifier's hidden layer


@dataclasses.dataclass(frozen=True)
class ChannelPricing:
    """How a runtime's kernels charge for channel counts, found from its table's own entries.

    ``block``: every count is rounded up to it (ONNX Runtime's NCHWc kernels compute 16 channels at a time
    on AVX-512, 8 on AVX2). ``slow_depthwise``: (kernel, width, factor): a depthwise convolution of that
    kernel whose channel count leaves a tail of up to half a ``width``-wide pack (:func:`_short_tail`) costs
    ``factor`` times as much per multiply-add (ncnn packs channels by 16 where the count allows, else by 8:
    on an AVX-512 EPYC its 7x7 depthwise convolution of 72 channels took longer than one of 96).
    ``slow_classifier``: (width, factor), the same for the classifier's hidden layer."""

    block: int
    slow_depthwise: tuple[tuple[int, int, float], ...] = ()
    slow_classifier: tuple[int, float] | None = None  # (width, factor) of the classifier's hidden layer
    split_depthwise: bool = False  # a block's depthwise multiply-adds priced apart from its others

    def macs(self, spec: BlockSpec) -> float:
        """The block's multiply-adds as the runtime charges for them."""
        macs = float(spec_macs(_padded(spec, self.block))) + self._depthwise_slowing(spec)
        if self.slow_classifier and spec.kind == "classifier":
            width, factor = self.slow_classifier
            if _short_tail(spec.mid_chs, width):
                macs += (factor - 1) * spec.in_chs * spec.mid_chs
        return macs

    def depthwise_macs(self, spec: BlockSpec) -> float:
        """The multiply-adds of the block's depthwise convolution as the runtime charges for them (0 without one)."""
        if spec.kind not in _DEPTHWISE_KINDS:
            return 0.0
        return float(_depthwise_macs(_padded(spec, self.block))) + self._depthwise_slowing(spec)

    def _depthwise_slowing(self, spec: BlockSpec) -> float:
        """The multiply-adds the block's depthwise convolution is charged beyond its own (a slowed kernel's)."""
        for kernel, width, factor in self.slow_depthwise:
            if spec.kind in _DEPTHWISE_KINDS and spec.kernel == kernel and _short_tail(_depthwise_chs(spec), width):
                return (factor - 1) * _depthwise_macs(spec)
        return 0.0

    def describe(self) -> str:
        """One line for a person: e.g. `channels rounded up to 8; 7x7 depthwise 2x per multiply-add at counts up to
        8 past a multiple of 16`."""
        slowed = [(f"{k}x{k} depthwise", w, f) for k, w, f in self.slow_depthwise]
        if self.slow_classifier:
            slowed.append(("classifier's hidden layer", *self.slow_classifier))
        tails = [
            f"{layer} {f:g}x per multiply-add at counts up to {w // 2} past a multiple of {w}" for layer, w, f in slowed
        ]
        split = ["depthwise multiply-adds priced apart from the others"] if self.split_depthwise else []
        return "; ".join([f"channels rounded up to {self.block}", *tails, *split])

    def slowing(self, kernel: int, width: int, factor: float) -> ChannelPricing:
        """This pricing with one more depthwise kernel slowed (``_CLASSIFIER``: the classifier's hidden layer)."""
        if kernel == _CLASSIFIER:
            return dataclasses.replace(self, slow_classifier=(width, factor))
        return dataclasses.replace(self, slow_depthwise=(*self.slow_depthwise, (kernel, width, factor)))


def edge_elements(spec: BlockSpec) -> int:
    """The activation elements at a block's input and output: what a runtime converts to and from its own
    layout when the block runs alone."""
    return spec.in_chs * spec.in_size**2 + spec.out_chs * spec.out_size**2


def _padded(spec: BlockSpec, block: int) -> BlockSpec:
    """The block with its channel counts rounded up to ``block`` (the image's channels and the classes stay)."""

    def up(c: int) -> int:
        return -(-c // block) * block

    return dataclasses.replace(
        spec,
        in_chs=spec.in_chs if spec.kind == "conv" and spec.in_chs <= 4 else up(spec.in_chs),
        out_chs=spec.out_chs if spec.kind == "classifier" else up(spec.out_chs),
        mid_chs=up(spec.mid_chs),
    )


def _short_tail(count: int, width: int) -> bool:
    """Whether ``count`` leaves a tail of at most half a ``width``-wide pack: the counts runtimes were seen
    to run at a narrower, slower pack (counts are multiples of 8, so for widths 8 and 16 this is "not a
    multiple"; XNNPACK fp32 ran a classifier's hidden layer of 8 or 16 past a multiple of 32 1.3x slower,
    24 past at full speed)."""
    return 0 < count % width <= width // 2


def _depthwise_chs(spec: BlockSpec) -> int:
    return spec.in_chs if spec.kind == "ds" else spec.mid_chs


def _depthwise_macs(spec: BlockSpec) -> int:
    return spec.out_size**2 * _depthwise_chs(spec) * spec.kernel**2


def _columns(entries: Sequence[tuple[BlockSpec, float]], pricing: ChannelPricing) -> tuple[str, ...]:
    """The terms of a shape's line: a constant and the priced multiply-adds; for classifiers timed at several
    hidden widths a term per input channel too (their pool and input handling; at one width it cannot be told
    from multiply-adds); with ``split_depthwise``, a block's depthwise multiply-adds apart from its others where
    the shape has entries enough to fit both."""
    kind = entries[0][0].kind
    if kind == "classifier" and len({s.mid_chs for s, _ in entries}) > 1:
        return ("one", "macs", "inputs")
    if pricing.split_depthwise and kind in _DEPTHWISE_KINDS and len(entries) > 3:
        return ("one", "other", "depthwise")
    return ("one", "macs")


def _row(spec: BlockSpec, pricing: ChannelPricing, columns: tuple[str, ...]) -> list[float]:
    """A block's values of its shape's terms (:func:`_columns`)."""
    macs = pricing.macs(spec)
    depthwise = pricing.depthwise_macs(spec) if "depthwise" in columns else 0.0
    values = {"one": 1.0, "macs": macs, "inputs": float(spec.in_chs), "depthwise": depthwise, "other": macs - depthwise}
    return [values[c] for c in columns]


def _design(entries: Sequence[tuple[BlockSpec, float]], pricing: ChannelPricing) -> tuple[np.ndarray, np.ndarray]:
    """(rows of a line's terms, costs) of a shape's entries."""
    columns = _columns(entries, pricing)
    return np.array([_row(s, pricing, columns) for s, _ in entries]), np.array([c for _, c in entries])


def _line(entries: Sequence[tuple[BlockSpec, float]], pricing: ChannelPricing) -> np.ndarray:
    """The coefficients of cost vs a shape's terms (:func:`_row`), fitted relative."""
    return _solve(*_design(entries, pricing))


def _loo_error(groups: dict[tuple, list[tuple[BlockSpec, float]]], pricing: ChannelPricing) -> float:
    """Mean relative error of each entry predicted by the line through the others of its shape."""
    errors = []
    for entries in groups.values():
        x, y = _design(entries, pricing)
        if len(y) <= x.shape[1]:
            continue
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            errors.append(abs(float(x[i] @ _solve(x[keep], y[keep])) / y[i] - 1))
    return float(np.mean(errors)) if errors else 0.0


def _channel_pricing(groups: dict[tuple, list[tuple[BlockSpec, float]]]) -> ChannelPricing:
    """The pricing whose lines predict each entry, left out in turn, best (:func:`_best_pricing`); depthwise
    multiply-adds priced apart from the others only where that is clearly better (SPLIT_GAIN)."""
    (plain, plain_error), (split, split_error) = _best_pricing(groups, False), _best_pricing(groups, True)
    return split if split_error < SPLIT_GAIN * plain_error else plain


def _best_pricing(groups: dict[tuple, list[tuple[BlockSpec, float]]], split: bool) -> tuple[ChannelPricing, float]:
    """For each channel block, each depthwise kernel's slowing (or none) chosen on that kernel's entries,
    then the classifier's on its own; the channel block whose pricing predicts every entry, left out in turn,
    best (the simplest wins a tie), with that error."""
    by_kernel: dict[int, dict[tuple, list[tuple[BlockSpec, float]]]] = {}
    for shape, entries in groups.items():
        if shape[0] in (*_DEPTHWISE_KINDS, "classifier"):
            by_kernel.setdefault(_CLASSIFIER if shape[0] == "classifier" else shape[2], {})[shape] = entries
    candidates = []
    for block in CHANNEL_BLOCKS:
        pricing = ChannelPricing(block, split_depthwise=split)
        for kernel, same in sorted(by_kernel.items(), key=lambda item: (item[0] == _CLASSIFIER, item[0])):
            chs = (lambda s: s.mid_chs) if kernel == _CLASSIFIER else _depthwise_chs
            counts = {chs(s) for entries in same.values() for s, _ in entries}
            options = [pricing] + [
                pricing.slowing(kernel, width, factor)
                for width in CHANNEL_BLOCKS
                if any(_short_tail(c, width) for c in counts)  # else the slowing would change nothing
                for factor in SLOW_FACTORS
            ]
            scores = [round(_loo_error(same, p), 3) for p in options]
            pricing = options[scores.index(min(scores))]
        candidates.append(pricing)
    errors = [_loo_error(groups, p) for p in candidates]
    best = [round(e, 3) for e in errors].index(min(round(e, 3) for e in errors))
    return candidates[best], errors[best]


def _shape(spec: BlockSpec) -> tuple:
    """What a block keeps when pruned: all but its channel counts."""
    return (spec.kind, spec.in_size, spec.kernel, spec.stride, spec.se, spec.act, spec.residual)
