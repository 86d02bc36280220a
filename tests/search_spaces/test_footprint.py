"""Size and activation-memory predictions: a hand computation, and the exported files themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgenas.export import activation_peak, export_onnx
from edgenas.quant import calibrate_qat, export_qat, prepare_qat
from edgenas.search_spaces import SPACES, SubNet, footprint, model_bytes, peak_activation_bytes
from edgenas.search_spaces._space import BlockSpec, spec_params

# stem 1 -> 8 channels at 8 px (stride 2), a depthwise-separable block with SE and a residual at 4 px, the head
HAND = (
    BlockSpec("conv", 1, 8, 8, 3, 2, act="hswish"),
    BlockSpec("ds", 8, 8, 4, 3, 1, 8, se=True, act="relu6"),
    BlockSpec("classifier", 8, 10, 4, 1, 1, 16, act="hswish"),
)


def _exports(net) -> dict[str, bytes]:
    """fp32 and QAT int8 exports of a net (a SubNet, or block specs to build one from)."""
    net = (SubNet(net) if isinstance(net, tuple) else net).eval()
    shape = net.input_shape
    q = calibrate_qat(prepare_qat(net), [torch.randn(4, *shape[1:], generator=torch.Generator().manual_seed(0))])
    return {"fp32": export_onnx(net, shape), "int8": export_qat(q, shape)}


def test_activation_memory_by_hand():
    # the peak is the SE product: the block input (kept for the residual add), the depthwise output,
    # the SE gate (8 values) and the product, 4 x 4 x 8 = 128 elements each
    assert peak_activation_bytes(HAND, "fp32") == (128 + 128 + 8 + 128) * 4
    assert peak_activation_bytes(HAND, "int8") == 128 + 128 + 8 + 128
    # a stem on a large input: the float input and its int8 copy are alive together
    stem = (BlockSpec("conv", 3, 8, 64, 3, 2, act="relu6"),)
    assert peak_activation_bytes(stem, "int8") == 3 * 64 * 64 * 4 + 3 * 64 * 64
    assert peak_activation_bytes(stem, "fp32") == 3 * 64 * 64 * 4 + 8 * 32 * 32 * 4


def test_the_prediction_is_what_the_exported_graph_keeps_alive():
    for precision, data in _exports(HAND).items():
        assert activation_peak(data) == peak_activation_bytes(HAND, precision)


def test_size_by_hand_is_the_weights_plus_the_graph():
    params = 80 + (80 + 144 + 72) + 314  # stem, ds (depthwise, SE, pointwise), head; BN folded
    assert sum(spec_params(s) for s in HAND) == params
    files = _exports(HAND)
    # fp32: 4 bytes a parameter and the graph's records; the records of a net this small are a third of it
    assert 4 * params < model_bytes(HAND, "fp32") < 4 * params + 2000
    for precision, data in files.items():
        assert model_bytes(HAND, precision) == pytest.approx(len(data), rel=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predictions_match_exports_of_sampled_archs(seed):
    space = SPACES["tiny"]
    arch = space.sample(np.random.default_rng(seed))
    specs = space.block_specs(arch)
    files = _exports(specs)
    fp = footprint(specs)
    for precision, data in files.items():
        assert fp.size_bytes[precision] == pytest.approx(len(data), rel=0.02), (arch, precision)
        assert fp.activation_bytes[precision] == activation_peak(data), (arch, precision)
    assert fp.params == sum(spec_params(s) for s in specs)
    assert fp.record()["flash_kb:int8"] == pytest.approx(fp.size_bytes["int8"] / 1024, abs=1e-3)


def test_int8_is_about_a_quarter_of_fp32_and_memory_grows_with_the_arch():
    space = SPACES["small"]
    small, large = (footprint(space.block_specs(a)) for a in (space.smallest(), space.largest()))
    for fp in (small, large):
        assert 0.24 < fp.size_bytes["int8"] / fp.size_bytes["fp32"] < 0.3
        assert 0.24 < fp.activation_bytes["int8"] / fp.activation_bytes["fp32"] < 0.3
    assert large.activation_bytes["fp32"] > small.activation_bytes["fp32"]
    assert large.size_bytes["int8"] > small.size_bytes["int8"]
    with pytest.raises(ValueError, match="precision must be one of"):
        model_bytes(space.block_specs(space.smallest()), "fp16")


def test_a_pruned_net_is_predicted_from_its_own_layers():
    """Pruning narrows SE reductions too, which a block spec does not describe: the size counts the layers."""
    from edgenas.pruning import PruneConfig
    from edgenas.search_spaces import Arch, build_subnet, current_specs, net_footprint
    from tests._pruning import prune_untrained

    space = SPACES["small"]
    net = build_subnet(space, Arch.parse("r24w0.5|k3e6se-k5e6se|k3e4se|k5e3|k3e6se")).eval()
    assert net_footprint(net) == footprint(current_specs(net))  # unpruned: the same figures
    pruned, _ = prune_untrained(net, tuple(net.input_shape), PruneConfig(step=0.2, max_steps=2, tolerance=1.0))
    fp = net_footprint(pruned)
    assert fp.params == sum(p.numel() for n, p in pruned.named_parameters() if "bn" not in n) + sum(
        m.num_features for m in pruned.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    for precision, data in _exports(pruned).items():
        assert fp.size_bytes[precision] == pytest.approx(len(data), rel=0.02), precision
        assert fp.activation_bytes[precision] == activation_peak(data), precision
