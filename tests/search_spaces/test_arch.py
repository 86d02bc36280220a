"""The arch encoding: exact round-trips, and clear rejections of malformed strings."""

from __future__ import annotations

import numpy as np
import pytest

from edgenas.search_spaces import SPACES, Arch, BlockChoice


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_string_and_dict_round_trip_over_random_archs(space_name):
    space = SPACES[space_name]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(500):
        arch = space.sample(rng)
        text = str(arch)
        assert Arch.parse(text) == arch
        assert str(Arch.parse(text)) == text
        assert Arch.from_dict(arch.to_dict()) == arch
        assert space.parse(text) == arch
        seen.add(text)
    assert len(seen) > 100  # the sampler really explores


def test_example_string():
    arch = Arch.parse("r160w0.75|k3e4se-k5e6|k3e3")
    assert arch.resolution == 160 and arch.width == 0.75
    assert arch.depths == (2, 1)
    assert arch.stages[0][0] == BlockChoice(3, 4, True)
    assert str(Arch.parse("r224|k3e4")) == "r224|k3e4"  # width 1.0 is implicit
    arch = Arch.parse("r28w0.5f256|k3e4")
    assert arch.features == 256 and arch.width == 0.5 and arch.to_dict()["f"] == 256
    assert "f" not in Arch.parse("r28w0.5|k3e4").to_dict()  # the space's default hidden width has no token


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty arch string"),
        ("x160|k3e4", "malformed arch head 'x160'"),
        ("r160", "has no stages"),
        ("r160|k3e4|", "stage 1"),
        ("r160|k3e4-k4", "malformed block token 'k4'"),
        ("r160|k3e4-K3E4", "malformed block token 'K3E4'"),
        ("r160|k3e4SE", "malformed block token 'k3e4SE'"),
        ("r160|k3e4se1", "malformed block token 'k3e4se1'"),
        ("r160|k03e4", "leading zeros"),
        ("r160w1.0|k3e4", "not canonical"),
        ("r160 |k3e4", "malformed arch head"),
        ("r0|k3e4", "resolution must be > 0"),
        ("r28f0|k3e4", "features must be >= 1"),
        ("r28f0256|k3e4", "not canonical"),
        ("r28f256w0.5|k3e4", "malformed arch head"),
    ],
)
def test_malformed_strings_are_rejected_with_the_token(text, fragment):
    with pytest.raises(ValueError) as err:
        Arch.parse(text)
    assert fragment in str(err.value)


def test_arch_that_does_not_fit_is_rejected_with_reason():
    space = SPACES["tiny"]
    good = space.sample(np.random.default_rng(1))
    cases = {
        "r99|k3e2|k3e2": "resolution 99 not in",
        "r16w0.75|k3e2|k3e2": "width 0.75 not in",
        "r16|k3e2": "it has 1 stages, the space has 2",
        "r16|k3e2-k3e2-k3e2|k3e2": "stage 0 depth 3 not in",
        "r16|k7e2|k3e2": "stage 0 block 0 kernel 7 not in",
        "r16|k3e2|k3e2-k3e6": "stage 1 block 1 expand 6 not in",
        "r16f48|k3e2|k3e2": "features 48 not in [32], or no f token for 64",
        "r16f64|k3e2|k3e2": "features 64 not in [32], or no f token for 64",
    }
    for text, fragment in cases.items():
        with pytest.raises(ValueError) as err:
            space.parse(text)
        assert fragment in str(err.value), (text, str(err.value))
    assert space.validate(good) is good


def test_dict_form_is_checked():
    with pytest.raises(ValueError, match="unknown arch keys"):
        Arch.from_dict({"r": 16, "d": [1], "ks": [3], "e": [2], "se": [False], "bogus": 1})
    with pytest.raises(ValueError, match="has 2 entries"):
        Arch.from_dict({"r": 16, "d": [1], "ks": [3, 5], "e": [2], "se": [False]})
