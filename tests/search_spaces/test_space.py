"""Spaces as data: YAML/dict round trips, block walks, keys, params and references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from edgenas.pipeline import load_space
from edgenas.search_spaces import SPACES, BlockSpec, Space, build_block, reference_archs, spec_params


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_space_dict_round_trip(space_name):
    space = SPACES[space_name]
    assert Space.from_dict(space.to_dict()) == space


def test_space_from_yaml_file(tmp_path):
    data = SPACES["tiny"].to_dict() | {"name": "mine", "num_classes": 3}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    space = load_space(str(path))
    assert space.name == "mine" and space.num_classes == 3
    assert space.stages == SPACES["tiny"].stages


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"colour": "red"}, "unknown space keys ['colour']"),
        ({"widths": []}, "widths needs at least one choice"),
        ({"stages": [{"channels": 8, "stride": 3, "act": "relu6"}]}, "stride must be 1 or 2"),
        ({"stages": [{"channels": 8, "stride": 1, "act": "gelu"}]}, "act choice 'gelu' is not allowed"),
        ({"stages": [{"channels": 8, "stride": 1, "act": "relu6", "kernels": [4]}]}, "odd"),
        ({"stages": [{"channels": 8, "stride": 1, "act": "relu6", "spin": 1}]}, "unknown keys ['spin'] in stage 0"),
        ({"feature_choices": [64]}, "feature_choices has duplicate choices"),
        ({"feature_choices": [128]}, "feature_choices [128] must be in [1, feature_chs 64)"),
    ],
)
def test_bad_space_definitions_name_the_problem(patch, fragment):
    data = SPACES["tiny"].to_dict() | patch
    with pytest.raises(ValueError) as err:
        Space.from_dict(data)
    assert fragment in str(err.value)


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_all_block_specs_cover_every_arch(space_name):
    space = SPACES[space_name]
    keys = set(space.all_block_specs())
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert set(space.block_specs(space.sample(rng))) <= keys
    for arch in reference_archs(space).values():
        assert set(space.block_specs(arch)) <= keys


def test_the_classifier_hidden_width_is_a_choice_where_the_space_offers_one():
    tiny, small = SPACES["tiny"], SPACES["small"]
    assert tiny.feature_options == (None, 32) and small.feature_options == (None,)
    assert "feature_choices" not in small.to_dict()  # a space without the choice reads as before it existed
    assert tiny.largest().features is None and tiny.smallest().features == 32
    sampled = {tiny.sample(np.random.default_rng(i)).features for i in range(40)}
    assert sampled == {None, 32}
    hidden = {s.mid_chs for s in tiny.all_block_specs() if s.kind == "classifier"}
    assert hidden == {32, 64}
    arch = tiny.parse("r16f32|k3e2|k3e2")
    assert tiny.block_specs(arch)[-1].mid_chs == 32
    assert tiny.block_specs(tiny.parse("r16|k3e2|k3e2"))[-1].mid_chs == 64


def test_block_walk_shapes_chain():
    space = SPACES["mbv3"]
    specs = space.block_specs(space.largest())
    for a, b in zip(specs, specs[1:]):
        assert a.out_chs == b.in_chs
        assert a.out_size == b.in_size
    assert specs[0].in_chs == 3 and specs[-1].out_chs == space.num_classes
    assert sum(s.stride == 2 for s in specs) == 5  # stem + four stride-2 stages: 224 -> 7
    assert specs[-1].in_size == 7


def test_block_key_round_trip_and_rejection():
    for spec in SPACES["small"].all_block_specs():
        assert BlockSpec.from_key(spec.key) == spec
    with pytest.raises(ValueError, match="malformed block key"):
        BlockSpec.from_key("ir:i24:o40")


def test_spec_params_match_torch_with_bn_folded():
    for spec in SPACES["small"].all_block_specs()[::23]:
        module = build_block(spec)
        folded = sum(p.numel() for n, p in module.named_parameters() if not n.endswith("bn.weight"))
        assert spec_params(spec) == folded, spec.key


def test_references_exist_fit_and_order_by_size():
    from edgenas.search_spaces import profile_arch

    space = SPACES["mbv3"]
    refs = reference_archs(space)
    assert set(refs) == {f"mbv3-{f}-{w}" for f in ("large", "small") for w in ("0.5", "0.75", "1")}
    large = [profile_arch(space, refs[f"mbv3-large-{w}"]).flops for w in ("0.5", "0.75", "1")]
    assert large == sorted(large)
    # MobileNetV3-Large 1.0 at 224 px: 219 M multiply-adds in the paper.
    assert 200e6 < large[-1] < 240e6
    for space in SPACES.values():
        for arch in reference_archs(space).values():
            space.validate(arch)


def test_built_blocks_produce_the_spec_shapes():
    for spec in SPACES["tiny"].all_block_specs():
        y = build_block(spec).eval()(torch.zeros(1, spec.in_chs, spec.in_size, spec.in_size))
        expect = (1, spec.out_chs) if spec.kind == "classifier" else (1, spec.out_chs, spec.out_size, spec.out_size)
        assert tuple(y.shape) == expect
