"""The spaces edgenas ships, and the MobileNetV3 reference layouts expressed in any space.

- ``mbv3``: the MobileNetV3-Large macro structure (five stages 24-40-80-112-160, strides
  2-2-2-1-2, relu6 in the first two stages, hardswish after) for 128-224 px inputs, with
  Once-for-All's elastic choices plus SE per block and width 0.5/0.75/1.0.
- ``small``: the same blocks for 24-32 px images (MNIST, Fashion-MNIST, CIFAR): a
  stride-1 stem and three stride-2 stages instead of five, depths 1-3, grayscale input.
- ``tiny``: two stages and a handful of choices, for tests.

The reference layouts are MobileNetV3-Small and -Large (Howard et al. 2019, Table 1/2)
mapped onto a space's choices; where the paper's value is not a choice of the space, the
nearest choice is used (e.g. Large's expand ratios 2.5/2.3 in stage 3 become 3, Small's
48- and 96-channel stages become the space's own stage widths). They are the baselines a
search must beat, trained stand-alone with the same budget.
"""

from __future__ import annotations

from edgenas.search_spaces._arch import Arch, BlockChoice
from edgenas.search_spaces._space import Space, StageSpec

__all__ = ["SPACES", "get_space", "reference_archs"]

_MBV3 = Space(
    name="mbv3",
    description="MobileNetV3-Large-like space for 128-224 px RGB images",
    stages=(
        StageSpec(24, 2, "relu6"),
        StageSpec(40, 2, "relu6"),
        StageSpec(80, 2, "hswish"),
        StageSpec(112, 1, "hswish"),
        StageSpec(160, 2, "hswish"),
    ),
    resolutions=(128, 160, 192, 224),
    widths=(0.5, 0.75, 1.0),
    in_chs=3,
)

_SMALL = Space(
    name="small",
    description="MobileNetV3-like space for 24-32 px images (MNIST, Fashion-MNIST), grayscale input",
    stages=(
        StageSpec(24, 2, "relu6", depths=(1, 2, 3)),
        StageSpec(40, 2, "relu6", depths=(1, 2, 3)),
        StageSpec(80, 1, "hswish", depths=(1, 2, 3)),
        StageSpec(96, 2, "hswish", depths=(1, 2, 3)),
    ),
    resolutions=(24, 28, 32),
    widths=(0.5, 0.75, 1.0),
    in_chs=1,
    stem_stride=1,
    head_chs=576,
    feature_chs=1024,
)

_TINY = Space(
    name="tiny",
    description="two-stage space for tests",
    stages=(
        StageSpec(16, 2, "relu6", depths=(1, 2), kernels=(3, 5), expands=(2, 3)),
        StageSpec(24, 2, "hswish", depths=(1, 2), kernels=(3, 5), expands=(2, 3)),
    ),
    resolutions=(16, 24),
    widths=(0.5, 1.0),
    in_chs=1,
    stem_chs=8,
    ds_chs=8,
    head_chs=48,
    feature_chs=64,
    feature_choices=(32,),
)

SPACES: dict[str, Space] = {s.name: s for s in (_MBV3, _SMALL, _TINY)}


def get_space(name: str) -> Space:
    """A built-in space by name."""
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; built-in spaces: {sorted(SPACES)} (or a YAML file)")
    return SPACES[name]


# (kernel, expand, se) per block, per MobileNetV3-Large stage (24, 40, 80, 112, 160 channels).
_LARGE = (
    ((3, 4, False), (3, 3, False)),
    ((5, 3, True), (5, 3, True), (5, 3, True)),
    ((3, 6, False), (3, 2.5, False), (3, 2.3, False), (3, 2.3, False)),
    ((3, 6, True), (3, 6, True)),
    ((5, 6, True), (5, 6, True), (5, 6, True)),
)
# MobileNetV3-Small's blocks grouped onto the same five stage slots (24, 40, 48, 96 channels
# and no stride-1 112-channel stage in the paper: its 48-channel pair stands in for slot 3
# and its last 96-channel trio is split over slots 4-5).
_SMALL_LAYOUT = (
    ((3, 4.5, False), (3, 3.67, False)),
    ((5, 4, True), (5, 6, True), (5, 6, True)),
    ((5, 3, True), (5, 3, True)),
    ((5, 6, True),),
    ((5, 6, True), (5, 6, True)),
)


def _nearest(value: float, allowed: tuple) -> int | float:
    return min(allowed, key=lambda a: (abs(a - value), a))


def _express(space: Space, layout: tuple, width: float) -> Arch:
    n = len(space.stages)
    stages = []
    for i, stage in enumerate(space.stages):
        slot = layout[round(i * (len(layout) - 1) / max(n - 1, 1))]
        depth = _nearest(len(slot), stage.depths)
        blocks = [slot[min(j, len(slot) - 1)] for j in range(depth)]
        stages.append(
            tuple(
                BlockChoice(
                    kernel=_nearest(k, stage.kernels), expand=_nearest(e, stage.expands), se=_nearest(se, stage.se)
                )
                for k, e, se in blocks
            )
        )
    return space.validate(
        Arch(resolution=max(space.resolutions), width=_nearest(width, space.widths), stages=tuple(stages))
    )


def reference_archs(space: Space) -> dict[str, Arch]:
    """MobileNetV3-Small/-Large at widths 0.5, 0.75, 1.0 (nearest the space allows), by name.

    Names carry the width actually used, so two requests that map to the same width
    collapse into one entry.
    """
    refs: dict[str, Arch] = {}
    for family, layout in (("mbv3-large", _LARGE), ("mbv3-small", _SMALL_LAYOUT)):
        for width in (0.5, 0.75, 1.0):
            arch = _express(space, layout, width)
            refs[f"{family}-{arch.width:g}"] = arch
    return refs
