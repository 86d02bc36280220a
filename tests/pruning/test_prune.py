"""Pruning: fewer channels in multiples of the divisor, same output shape, still exports and runs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgenas.export import export_onnx
from edgenas.pruning import PruneConfig, channel_counts, progressive_prune
from edgenas.search_spaces import SPACES, build_subnet
from tests._pruning import prune_untrained


@pytest.mark.parametrize("divisor", [8, 16])
def test_progressive_pruning(divisor):
    space = SPACES["small"]
    torch.manual_seed(0)
    net = build_subnet(space, space.parse("r28|k3e4-k5e6se|k7e3se|k3e4|k5e6se-k3e3")).eval()
    x = torch.randn(2, 1, 28, 28)
    calls = []
    pruned, steps = progressive_prune(
        net,
        x,
        PruneConfig(step=0.1, max_steps=3, divisor=divisor, tolerance=1.0),
        finetune=lambda m: calls.append("ft"),
        evaluate=lambda m: 0.5,
    )
    assert len(steps) == 4 and calls == ["ft"] * 3 and all(s.kept for s in steps)
    assert steps[-1].params < 0.75 * steps[0].params
    before, after = channel_counts(net), channel_counts(pruned)
    assert sum(after) < sum(before)
    assert all(c % divisor == 0 for c in after)
    assert pruned(x).shape == net(x).shape == (2, 10)
    data = export_onnx(pruned, (1, 1, 28, 28))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expect = pruned(x[:1]).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x[:1].numpy()})[0], expect, rtol=1e-4, atol=1e-4)


def test_a_step_rounds_each_layer_to_the_nearest_multiple_so_that_narrow_layers_keep_their_channels():
    """A 5 % step: a 16- or 24-channel layer keeps all (rounded down, it would lose 8: half of it), a 144-channel
    one loses 8 (5.6 %), and the model loses about the step's share of its parameters, not a fifth."""
    space = SPACES["small"]
    torch.manual_seed(0)
    net = build_subnet(space, space.parse("r28w0.5|k7e6|k5e4se-k5e6se-k3e6se|k3e4-k3e3|k3e4se")).eval()
    pruned, steps = progressive_prune(
        net,
        torch.zeros(1, 1, 28, 28),
        PruneConfig(step=0.05, max_steps=1, divisor=8, tolerance=1.0),
        finetune=lambda m: None,
        evaluate=lambda m: 0.5,
    )
    before, after = channel_counts(net), channel_counts(pruned)
    assert all(b == a for b, a in zip(before, after) if b <= 24)  # narrow: untouched
    assert any(b == 144 and a == 136 for b, a in zip(before, after))  # wide: one block of 8
    assert all(a % 8 == 0 and b - a <= max(8, 0.1 * b) for b, a in zip(before, after))
    assert 0.85 * steps[0].params < steps[1].params < 0.97 * steps[0].params


def test_pruning_stops_at_tolerance_and_keeps_the_last_good_model():
    space = SPACES["tiny"]
    net = build_subnet(space, space.largest()).eval()
    scores = iter([0.9, 0.89, 0.5])  # base, step 1 (within 0.05), step 2 (too low)
    pruned, steps = progressive_prune(
        net,
        torch.randn(1, 1, 24, 24),
        PruneConfig(step=0.1, max_steps=4, tolerance=0.05),
        finetune=lambda m: None,
        evaluate=lambda m: next(scores),
    )
    assert [s.kept for s in steps] == [True, True, False]
    assert sum(p.numel() for p in pruned.parameters()) == steps[1].params


def test_bad_prune_config():
    with pytest.raises(ValueError, match="step \\* max_steps < 1"):
        PruneConfig(step=0.3, max_steps=4)
    with pytest.raises(ValueError, match="prune.ram_target_kb must be > 0, got 0"):
        PruneConfig(ram_target_kb=0)


def test_pruning_stops_once_the_memory_and_size_targets_are_met():
    from edgenas.search_spaces import net_footprint

    space = SPACES["small"]
    net = build_subnet(space, space.parse("r28|k3e4-k5e6se|k7e3se|k3e4|k5e6se-k3e3")).eval()

    def memory(m):  # predicted activation memory and size of the int8 export, kB
        fp = net_footprint(m)
        return fp.activation_bytes["int8"] / 1024, fp.size_bytes["int8"] / 1024

    # the figures of each step without targets, then a size target between steps 1 and 2
    _, free = prune_untrained(net, 28, PruneConfig(step=0.1, max_steps=4, tolerance=1.0), memory=memory)
    flash = [s.flash_kb for s in free]
    assert flash == sorted(flash, reverse=True) and flash[2] < flash[1]
    ram0 = free[0].ram_kb  # a memory target met from the start
    target = (flash[1] + flash[2]) / 2
    config = PruneConfig(step=0.1, max_steps=4, tolerance=1.0, ram_target_kb=ram0, flash_target_kb=target)
    pruned, steps = prune_untrained(net, 28, config, memory=memory)
    assert [s.flash_kb for s in steps] == flash[:3]  # stopped at step 2, the first within both targets
    assert memory(pruned) == (steps[-1].ram_kb, steps[-1].flash_kb)
    # without a memory function the targets cannot be met: pruning runs to the end
    _, blind = prune_untrained(net, 28, config)
    assert len(blind) == 5


def test_an_auto_divisor_is_the_devices_channel_block_at_most_16_and_8_without_one():
    """finalize resolves "auto" with the channel block its table found (16 for ONNX Runtime on AVX-512); 32
    would take a 72-channel layer to 32; a caller without a table gets 8."""
    assert PruneConfig().divisor == "auto"
    assert [PruneConfig().resolved(b).divisor for b in (8, 16, 32, None)] == [8, 16, 16, 8]
    assert PruneConfig(divisor=8).resolved(16).divisor == 8  # a divisor given is kept
    net = build_subnet(SPACES["tiny"], SPACES["tiny"].largest()).eval()
    pruned, _ = prune_untrained(net, 16, PruneConfig(step=0.2, max_steps=1, tolerance=1.0))
    changed = [a for b, a in zip(channel_counts(net), channel_counts(pruned)) if a != b]
    assert changed and all(c % 8 == 0 for c in changed)


def test_finalize_prunes_to_the_block_its_device_table_found(tiny_table):
    from types import SimpleNamespace

    from edgenas.config import FinalizeConfig
    from edgenas.finalize import _prune_config
    from edgenas.latency_tables import LatencyTable, Predictor

    predictor = Predictor(LatencyTable.load(tiny_table))
    block = predictor.channel_pricing.block
    run = SimpleNamespace(config=FinalizeConfig(), predictor=predictor)
    assert _prune_config(run).divisor == min(block, 16)
    assert _prune_config(SimpleNamespace(config=FinalizeConfig(), predictor=None)).divisor == 8
    given = FinalizeConfig(prune=PruneConfig(divisor=32))
    assert _prune_config(SimpleNamespace(config=given, predictor=predictor)).divisor == 32
