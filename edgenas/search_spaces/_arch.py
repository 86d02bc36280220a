"""The architecture encoding: a frozen dataclass with a canonical string that round-trips.

Grammar (one line, no spaces)::

    r<resolution>[w<width>][f<features>]|<stage>|<stage>|...
    stage = <block>-<block>-...          (its length is the stage's depth)
    block = k<kernel>e<expand>[se]

for example ``r160w0.75|k3e4-k5e6se|k3e3-k3e3-k7e6``. The width token is left out when the
width is 1.0, and the features token (the classifier's hidden width, where a space lets an
arch choose it: ``r28w0.5f256|...``) when the arch keeps the space's default, so the string
of an arch is unique. Parsing rejects anything that the
grammar does not produce, naming the offending token and what is allowed; whether the
arch fits a particular space is checked by :meth:`edgenas.search_spaces.Space.validate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Arch", "BlockChoice"]

_HEAD_RE = re.compile(r"^r(\d+)(?:w(\d+(?:\.\d+)?))?(?:f(\d+))?$")
_BLOCK_RE = re.compile(r"^k(\d+)e(\d+)(se)?$")
_HEAD_GRAMMAR = "r<resolution>[w<width>][f<features>], e.g. 'r160', 'r160w0.75' or 'r28w0.5f256'"
_BLOCK_GRAMMAR = "k<kernel>e<expand>[se], e.g. 'k3e4' or 'k5e6se'"


@dataclass(frozen=True)
class BlockChoice:
    """The elastic choices of one inverted-residual block."""

    kernel: int
    expand: int
    se: bool = False

    def __str__(self) -> str:
        return f"k{self.kernel}e{self.expand}{'se' if self.se else ''}"

    @classmethod
    def parse(cls, token: str) -> BlockChoice:
        m = _BLOCK_RE.match(token)
        if m is None:
            raise ValueError(f"malformed block token {token!r}: expected {_BLOCK_GRAMMAR}")
        kernel, expand = int(m.group(1)), int(m.group(2))
        if str(kernel) != m.group(1) or str(expand) != m.group(2):
            raise ValueError(f"block token {token!r} has leading zeros; canonical form is 'k{kernel}e{expand}'")
        return cls(kernel=kernel, expand=expand, se=m.group(3) is not None)


def _format_width(width: float) -> str:
    text = f"{width:.4f}".rstrip("0").rstrip(".")
    return "" if width == 1.0 else f"w{text}"


@dataclass(frozen=True)
class Arch:
    """A subnet of a search space: input resolution, width multiplier, blocks per stage, and the classifier's
    hidden width where the space offers a choice (``None``: the space's ``feature_chs``)."""

    resolution: int
    stages: tuple[tuple[BlockChoice, ...], ...]
    width: float = 1.0
    features: int | None = None

    def __post_init__(self) -> None:
        if not self.stages or any(len(s) == 0 for s in self.stages):
            raise ValueError(f"an arch needs at least one block in every stage, got depths {self.depths}")
        if self.resolution <= 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.features is not None and self.features < 1:
            raise ValueError(f"features must be >= 1, got {self.features}")

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    @property
    def blocks(self) -> tuple[BlockChoice, ...]:
        return tuple(b for s in self.stages for b in s)

    def __str__(self) -> str:
        features = "" if self.features is None else f"f{self.features}"
        head = f"r{self.resolution}{_format_width(self.width)}{features}"
        return "|".join([head] + ["-".join(str(b) for b in stage) for stage in self.stages])

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse a canonical arch string; the result's ``str()`` equals ``text``."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty arch string {text!r}: expected {_HEAD_GRAMMAR}|<stage>|...")
        parts = text.strip().split("|")
        m = _HEAD_RE.match(parts[0])
        if m is None:
            raise ValueError(f"malformed arch head {parts[0]!r}: expected {_HEAD_GRAMMAR}")
        if len(parts) < 2:
            raise ValueError(f"arch string {text!r} has no stages: expected {_HEAD_GRAMMAR}|<stage>|...")
        stages = []
        for i, stage in enumerate(parts[1:]):
            if not stage:
                raise ValueError(f"stage {i} of {text!r} is empty: expected {_BLOCK_GRAMMAR} joined by '-'")
            stages.append(tuple(BlockChoice.parse(tok) for tok in stage.split("-")))
        width = float(m.group(2)) if m.group(2) is not None else 1.0
        features = int(m.group(3)) if m.group(3) is not None else None
        arch = cls(resolution=int(m.group(1)), stages=tuple(stages), width=width, features=features)
        if str(arch) != text.strip():
            raise ValueError(f"arch string {text!r} is not canonical; canonical form is {str(arch)!r}")
        return arch

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Once-for-All style lists, one entry per block; ``f`` only where chosen)."""
        data: dict[str, Any] = {
            "r": self.resolution,
            "w": self.width,
            "d": list(self.depths),
            "ks": [b.kernel for b in self.blocks],
            "e": [b.expand for b in self.blocks],
            "se": [b.se for b in self.blocks],
        }
        return data if self.features is None else {**data, "f": self.features}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        allowed = {"r", "w", "d", "ks", "e", "se", "f"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown arch keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        missing = {"r", "d", "ks", "e", "se"} - set(data)
        if missing:
            raise ValueError(f"arch dict is missing keys {sorted(missing)}")
        n = sum(data["d"])
        for key in ("ks", "e", "se"):
            if len(data[key]) != n:
                raise ValueError(f"arch dict key {key!r} has {len(data[key])} entries, depths {data['d']} need {n}")
        blocks = [BlockChoice(int(k), int(e), bool(s)) for k, e, s in zip(data["ks"], data["e"], data["se"])]
        stages, start = [], 0
        for d in data["d"]:
            stages.append(tuple(blocks[start : start + d]))
            start += d
        features = None if data.get("f") is None else int(data["f"])
        return cls(resolution=int(data["r"]), stages=tuple(stages), width=float(data.get("w", 1.0)), features=features)
