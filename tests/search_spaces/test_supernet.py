"""The supernet: extracted subnets compute exactly what the supernet computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgenas.latency_tables._models import _randomised
from edgenas.search_spaces import SPACES, Supernet


def _randomise_bn(net: nn.Module) -> None:
    """Random BN statistics, so that slicing mistakes in them would show."""
    _randomised(net, 0)


@pytest.mark.parametrize("space_name", ["tiny", "small"])
def test_extract_equals_supernet_in_eval_mode(space_name):
    space = SPACES[space_name]
    torch.manual_seed(0)
    net = Supernet(space)
    _randomise_bn(net)
    net.eval()
    rng = np.random.default_rng(0)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(8)]
    for arch in archs:
        x = torch.randn(2, space.in_chs, arch.resolution, arch.resolution)
        sub = net.extract(arch).eval()
        with torch.no_grad():
            diff = (net(x, arch) - sub(x)).abs().max().item()
        assert diff < 1e-5, (str(arch), diff)
        assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in net.parameters())


def test_extract_copies_weights_not_views():
    space = SPACES["tiny"]
    net = Supernet(space).eval()
    arch = space.largest()
    sub = net.extract(arch)
    before = net.stem.layer.weight.detach().clone()
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    assert torch.equal(net.stem.layer.weight, before)


def test_training_updates_only_the_used_bn_channels():
    space = SPACES["tiny"]
    net = Supernet(space).train()
    arch = space.smallest()  # width 0.5: half of the stem's channels
    used = space.channels(arch.width)["stem"]
    bn = net.stem.layer.bn
    before = bn.running_mean.clone()
    net(torch.randn(4, space.in_chs, arch.resolution, arch.resolution), arch)
    assert not torch.equal(bn.running_mean[:used], before[:used])
    assert torch.equal(bn.running_mean[used:], before[used:])


def test_smaller_kernels_share_the_centre_of_the_largest():
    space = SPACES["tiny"]
    net = Supernet(space)
    block = net.stages[0][0]
    p3 = block.dw.sliced(8, 8, 3)["conv.weight"]
    p5 = block.dw.sliced(8, 8, 5)["conv.weight"]
    assert torch.equal(p3, p5[:, :, 1:4, 1:4])
