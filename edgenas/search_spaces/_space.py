"""Search spaces as data: the choices per stage, and the one walk from an arch to its blocks.

A :class:`Space` says which kernels, expand ratios, depths, SE flags, resolutions, width
multipliers and classifier hidden widths are allowed. :meth:`Space.block_specs` turns an :class:`Arch` into the list of
:class:`BlockSpec` it is made of. A ``BlockSpec`` holds exactly what changes the block's
graph, so it is also the latency-table key; the torch modules, the supernet, the latency
predictor, FLOPs and params all start from that one walk.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from edgenas.search_spaces._arch import Arch, BlockChoice

__all__ = ["ACTIVATIONS", "BLOCK_KINDS", "BlockSpec", "Space", "StageSpec", "make_divisible", "spec_params"]

ACTIVATIONS = ("relu6", "hswish")
BLOCK_KINDS = ("conv", "ds", "ir", "classifier")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below it or 10 % under ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def se_channels(chs: int) -> int:
    """Squeeze channels of the SE module on ``chs`` channels (ratio 0.25, multiple of 8)."""
    return make_divisible(chs / 4, 8)


_KEY_RE = re.compile(
    r"^(?P<kind>[a-z]+):i(?P<i>\d+):o(?P<o>\d+):r(?P<r>\d+):k(?P<k>\d+):s(?P<s>\d+):"
    r"m(?P<m>\d+):se(?P<se>[01]):(?P<act>[a-z0-9]+)$"
)


@dataclass(frozen=True, order=True)
class BlockSpec:
    """One block with everything that changes its graph; ``key`` is its latency-table key.

    kinds: ``conv`` (k x k conv + BN + act: the stem and the final 1x1 expansion), ``ds``
    (depthwise-separable: depthwise k x k + BN + act [+ SE], pointwise 1x1 + BN),
    ``ir`` (inverted residual: 1x1 expand to ``mid_chs`` -> depthwise k x k [+ SE] ->
    1x1 project, residual when stride is 1 and in == out) and ``classifier`` (global
    average pool -> linear to ``mid_chs`` + act -> linear to ``out_chs`` classes).
    ``in_size`` is the input's spatial side (square inputs).
    """

    kind: str
    in_chs: int
    out_chs: int
    in_size: int
    kernel: int = 1
    stride: int = 1
    mid_chs: int = 0
    se: bool = False
    act: str = "relu6"

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; allowed: {BLOCK_KINDS}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; allowed: {ACTIVATIONS}")
        if self.kernel % 2 != 1:
            raise ValueError(f"kernel must be odd, got {self.kernel}")

    @property
    def out_size(self) -> int:
        if self.kind == "classifier":
            return 1
        return (self.in_size + self.stride - 1) // self.stride

    @property
    def residual(self) -> bool:
        return self.kind in ("ds", "ir") and self.stride == 1 and self.in_chs == self.out_chs

    @property
    def key(self) -> str:
        return (
            f"{self.kind}:i{self.in_chs}:o{self.out_chs}:r{self.in_size}:k{self.kernel}:s{self.stride}:"
            f"m{self.mid_chs}:se{int(self.se)}:{self.act}"
        )

    @classmethod
    def from_key(cls, key: str) -> BlockSpec:
        m = _KEY_RE.match(key)
        if m is None:
            raise ValueError(f"malformed block key {key!r}: expected e.g. 'ir:i24:o40:r56:k5:s2:m96:se1:hswish'")
        g = m.groupdict()
        return cls(
            kind=g["kind"],
            in_chs=int(g["i"]),
            out_chs=int(g["o"]),
            in_size=int(g["r"]),
            kernel=int(g["k"]),
            stride=int(g["s"]),
            mid_chs=int(g["m"]),
            se=g["se"] == "1",
            act=g["act"],
        )


def _check_choices(owner: str, name: str, values: tuple, allowed: tuple | None = None) -> None:
    if len(values) == 0:
        raise ValueError(f"{owner}: {name} needs at least one choice, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{owner}: {name} has duplicate choices {values}")
    if allowed is not None:
        for v in values:
            if v not in allowed:
                raise ValueError(f"{owner}: {name} choice {v!r} is not allowed; allowed: {allowed}")


@dataclass(frozen=True)
class StageSpec:
    """One stage: output channels, stride of its first block, activation, elastic choices."""

    channels: int
    stride: int
    act: str
    depths: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    se: tuple[bool, ...] = (False, True)

    def __post_init__(self) -> None:
        for name in ("depths", "kernels", "expands", "se"):
            object.__setattr__(self, name, tuple(sorted(getattr(self, name))))
        _check_choices("stage", "act", (self.act,), ACTIVATIONS)
        _check_choices("stage", "depths", self.depths)
        _check_choices("stage", "kernels", self.kernels)
        _check_choices("stage", "expands", self.expands)
        _check_choices("stage", "se", self.se, (False, True))
        if self.stride not in (1, 2):
            raise ValueError(f"stage stride must be 1 or 2, got {self.stride}")
        if min(self.depths) < 1 or min(self.expands) < 1 or self.channels < 1:
            raise ValueError(f"stage depths, expands and channels must be >= 1: {self}")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ValueError(f"stage kernels must be odd and >= 1, got {self.kernels}")


@dataclass(frozen=True)
class Space:
    """A MobileNetV3-like elastic space: stem conv, one depthwise-separable block, stages, head.

    Channels of every layer but the classifier's hidden layer scale with the arch's width
    multiplier (rounded to multiples of 8). The hidden layer is ``feature_chs`` wide, or one of
    the narrower ``feature_choices`` where the space offers them (an arch's ``f<n>`` token):
    the hidden width is a choice of its own, as the trunk's cost and the head's are not tied.
    """

    name: str
    stages: tuple[StageSpec, ...]
    resolutions: tuple[int, ...]
    widths: tuple[float, ...] = (1.0,)
    in_chs: int = 3
    num_classes: int = 10
    stem_chs: int = 16
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_act: str = "hswish"
    ds_chs: int = 16
    ds_kernel: int = 3
    ds_act: str = "relu6"
    head_chs: int = 960
    head_act: str = "hswish"
    feature_chs: int = 1280
    feature_choices: tuple[int, ...] = ()
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "resolutions", tuple(sorted(self.resolutions)))
        object.__setattr__(self, "widths", tuple(sorted(float(w) for w in self.widths)))
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ValueError(f"space name {self.name!r} may only use letters, digits, '_', '.', '-'")
        if not self.stages:
            raise ValueError(f"space {self.name!r} needs at least one stage")
        _check_choices(self.name, "resolutions", self.resolutions)
        _check_choices(self.name, "widths", self.widths)
        if min(self.resolutions) < 4 or any(w <= 0 or w > 4 for w in self.widths):
            raise ValueError(f"space {self.name!r}: resolutions must be >= 4 and widths in (0, 4]")
        for name in ("stem_act", "ds_act", "head_act"):
            _check_choices(self.name, name, (getattr(self, name),), ACTIVATIONS)
        if self.in_chs < 1 or self.num_classes < 2:
            raise ValueError(f"space {self.name!r}: in_chs must be >= 1 and num_classes >= 2")
        object.__setattr__(self, "feature_choices", tuple(sorted(int(f) for f in self.feature_choices)))
        _check_choices(self.name, "feature_choices", (self.feature_chs, *self.feature_choices))
        if any(not 1 <= f < self.feature_chs for f in self.feature_choices):
            raise ValueError(
                f"space {self.name!r}: feature_choices {list(self.feature_choices)} must be in [1, feature_chs "
                f"{self.feature_chs}) (an arch without an f token has feature_chs)"
            )

    @property
    def feature_options(self) -> tuple[int | None, ...]:
        """An arch's possible ``features``: ``None`` (``feature_chs``), then each of ``feature_choices``."""
        return (None, *self.feature_choices)

    # ----------------------------------------------------------------------------- arch checks
    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it fits this space, else raise ValueError saying why."""
        where = f"arch {arch} does not fit space {self.name!r}"
        if arch.resolution not in self.resolutions:
            raise ValueError(f"{where}: resolution {arch.resolution} not in {self.resolutions}")
        if arch.width not in self.widths:
            raise ValueError(f"{where}: width {arch.width} not in {self.widths}")
        if arch.features not in self.feature_options:
            allowed = f"{list(self.feature_choices)}, or no f token for {self.feature_chs}"
            raise ValueError(f"{where}: features {arch.features} not in {allowed}")
        if len(arch.stages) != len(self.stages):
            raise ValueError(f"{where}: it has {len(arch.stages)} stages, the space has {len(self.stages)}")
        for i, (blocks, stage) in enumerate(zip(arch.stages, self.stages)):
            if len(blocks) not in stage.depths:
                raise ValueError(f"{where}: stage {i} depth {len(blocks)} not in {stage.depths}")
            for j, b in enumerate(blocks):
                for name, value, allowed in (
                    ("kernel", b.kernel, stage.kernels),
                    ("expand", b.expand, stage.expands),
                    ("se", b.se, stage.se),
                ):
                    if value not in allowed:
                        raise ValueError(f"{where}: stage {i} block {j} {name} {value} not in {allowed}")
        return arch

    def parse(self, text: str) -> Arch:
        """Parse an arch string and check that it fits this space."""
        return self.validate(Arch.parse(text))

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random arch (every choice independent)."""
        stages = []
        for stage in self.stages:
            depth = int(rng.choice(stage.depths))
            stages.append(
                tuple(
                    BlockChoice(
                        kernel=int(rng.choice(stage.kernels)),
                        expand=int(rng.choice(stage.expands)),
                        se=bool(rng.choice(stage.se)),
                    )
                    for _ in range(depth)
                )
            )
        arch = Arch(
            resolution=int(rng.choice(self.resolutions)), width=float(rng.choice(self.widths)), stages=tuple(stages)
        )
        if not self.feature_choices:  # no draw: a space without the choice samples as it did before it existed
            return arch
        options = self.feature_options
        return dataclasses.replace(arch, features=options[int(rng.integers(len(options)))])

    def largest(self, resolution: int | None = None) -> Arch:
        return self._extreme(max, resolution)

    def smallest(self, resolution: int | None = None) -> Arch:
        return self._extreme(min, resolution)

    def _extreme(self, pick: Any, resolution: int | None) -> Arch:
        stages = tuple(
            tuple(BlockChoice(pick(s.kernels), pick(s.expands), pick(s.se)) for _ in range(pick(s.depths)))
            for s in self.stages
        )
        res = pick(self.resolutions) if resolution is None else resolution
        features = None if pick is max or not self.feature_choices else min(self.feature_choices)
        return self.validate(Arch(resolution=res, width=pick(self.widths), stages=stages, features=features))

    # ----------------------------------------------------------------------------- the walk
    def channels(self, width: float) -> dict[str, Any]:
        """Channel counts at a width multiplier: stem, ds, per stage, head."""
        return {
            "stem": make_divisible(self.stem_chs * width),
            "ds": make_divisible(self.ds_chs * width),
            "stages": [make_divisible(s.channels * width) for s in self.stages],
            "head": make_divisible(self.head_chs * width),
        }

    def block_specs(self, arch: Arch) -> tuple[BlockSpec, ...]:
        """The blocks of ``arch`` in order (the arch is validated first)."""
        self.validate(arch)
        return self._walk(arch.resolution, arch.width, arch.stages, arch.features or self.feature_chs)

    def _walk(
        self, resolution: int, width: float, stages: tuple[tuple[BlockChoice, ...], ...], features: int
    ) -> tuple[BlockSpec, ...]:
        ch = self.channels(width)
        size = resolution
        specs = [
            BlockSpec("conv", self.in_chs, ch["stem"], size, self.stem_kernel, self.stem_stride, act=self.stem_act)
        ]
        size = specs[-1].out_size
        specs.append(BlockSpec("ds", ch["stem"], ch["ds"], size, self.ds_kernel, 1, ch["stem"], act=self.ds_act))
        in_chs = ch["ds"]
        for stage, out_chs, blocks in zip(self.stages, ch["stages"], stages):
            for j, b in enumerate(blocks):
                stride = stage.stride if j == 0 else 1
                mid = make_divisible(in_chs * b.expand)
                specs.append(BlockSpec("ir", in_chs, out_chs, size, b.kernel, stride, mid, b.se, stage.act))
                size = specs[-1].out_size
                in_chs = out_chs
        specs.append(BlockSpec("conv", in_chs, ch["head"], size, 1, 1, act=self.head_act))
        specs.append(BlockSpec("classifier", ch["head"], self.num_classes, size, 1, 1, features, act="hswish"))
        return tuple(specs)

    def all_block_specs(self) -> tuple[BlockSpec, ...]:
        """Every block any arch of this space can contain (the keys a full latency table needs)."""
        keys: set[BlockSpec] = set()
        for resolution, width in product(self.resolutions, self.widths):
            # one walk per (position, choice): blocks of a stage depend on the stage, the
            # choice and whether they are the stage's first block, never on other blocks.
            base = tuple(
                tuple(BlockChoice(s.kernels[0], s.expands[0], s.se[0]) for _ in range(max(s.depths)))
                for s in self.stages
            )
            for features in (self.feature_chs, *self.feature_choices):
                keys.update(self._walk(resolution, width, base, features))
            for i, stage in enumerate(self.stages):
                for k, e, se in product(stage.kernels, stage.expands, stage.se):
                    choice = BlockChoice(k, e, se)
                    stages = list(base)
                    stages[i] = tuple(choice for _ in range(max(stage.depths)))
                    walk = self._walk(resolution, width, tuple(stages), self.feature_chs)
                    keys.update(s for s in walk if s.kind == "ir")
        return tuple(sorted(keys))

    # ----------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stages"] = [
            {**dataclasses.asdict(s), **{k: list(getattr(s, k)) for k in ("depths", "kernels", "expands", "se")}}
            for s in self.stages
        ]
        data["resolutions"] = list(self.resolutions)
        data["widths"] = list(self.widths)
        if self.feature_choices:
            data["feature_choices"] = list(self.feature_choices)
        else:  # a space without them reads as it did before they existed (checkpoints and tables compare it)
            del data["feature_choices"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        """Build a space from plain data (e.g. a YAML file); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ValueError(f"a space must be a mapping, got {type(data).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown space keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        missing = {"name", "stages", "resolutions"} - set(data)
        if missing:
            raise ValueError(f"space is missing required keys {sorted(missing)}")
        stage_allowed = {f.name for f in dataclasses.fields(StageSpec)}
        stages = []
        for i, s in enumerate(data["stages"]):
            if not isinstance(s, dict):
                raise ValueError(f"space stage {i} must be a mapping, got {s!r}")
            bad = set(s) - stage_allowed
            if bad:
                raise ValueError(f"unknown keys {sorted(bad)} in stage {i}; allowed: {sorted(stage_allowed)}")
            stages.append(StageSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}))
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "stages"}
        try:
            return cls(stages=tuple(stages), **kwargs)
        except TypeError as exc:
            raise ValueError(f"invalid space definition: {exc}") from exc


def spec_params(spec: BlockSpec) -> int:
    """Parameter count of a block, BatchNorm folded into the convolutions (as deployed).

    Pure arithmetic on the spec, so latency prediction needs neither torch nor fvcore.
    """

    def conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cout * (cin // groups) * k * k + cout  # weight + folded-BN bias

    def se(chs: int) -> int:
        r = se_channels(chs)
        return chs * r + r + r * chs + chs

    if spec.kind == "conv":
        return conv(spec.in_chs, spec.out_chs, spec.kernel)
    if spec.kind == "ds":
        n = conv(spec.in_chs, spec.in_chs, spec.kernel, spec.in_chs) + conv(spec.in_chs, spec.out_chs, 1)
        return n + (se(spec.in_chs) if spec.se else 0)
    if spec.kind == "ir":
        m = spec.mid_chs
        n = conv(spec.in_chs, m, 1) + conv(m, m, spec.kernel, m) + conv(m, spec.out_chs, 1)
        return n + (se(m) if spec.se else 0)
    return spec.in_chs * spec.mid_chs + spec.mid_chs + spec.mid_chs * spec.out_chs + spec.out_chs


def spec_macs(spec: BlockSpec) -> int:
    """Multiply-adds of a block at batch 1 (convolutions and linear layers; fvcore's convention)."""
    out = spec.out_size * spec.out_size
    if spec.kind == "conv":
        return out * spec.out_chs * spec.in_chs * spec.kernel * spec.kernel
    if spec.kind == "classifier":
        return spec.in_chs * spec.mid_chs + spec.mid_chs * spec.out_chs
    m = spec.in_chs if spec.kind == "ds" else spec.mid_chs
    expand = spec.in_size * spec.in_size * spec.in_chs * m if spec.kind == "ir" else 0
    se = 2 * m * se_channels(m) if spec.se else 0
    return expand + out * m * spec.kernel * spec.kernel + se + out * m * spec.out_chs
