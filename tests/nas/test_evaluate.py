"""Subnet evaluation: BN recalibration on the extracted copy, caching, sensible accuracy."""

from __future__ import annotations

import torch

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.nas import SubnetEvaluator, load_supernet, recalibrate_bn


def test_recalibration_resets_and_reestimates_bn():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    bn = net[1]
    x = torch.randn(64, 1, 8, 8) * 3 + 2
    recalibrate_bn(net, [x[:32], x[32:]])
    with torch.no_grad():
        y = net[0](x)
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and not net.training


def test_evaluator_caches_and_leaves_supernet_alone(tiny_run):
    config = load_config(tiny_run)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    supernet = load_supernet(space, config.layout.supernet)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    ev = SubnetEvaluator(supernet, splits, calib_batches=2)
    arch = space.largest()
    acc = ev(arch)
    assert 0.3 < acc <= 1.0  # 2 epochs on digits: far above chance (0.1)
    assert ev(arch) == acc and len(ev.cache) == 1
    for k, v in supernet.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_evaluator_on_the_first_images_equals_accuracy_on_that_prefix(tiny_run):
    import numpy as np

    from edgenas.nas import accuracy

    config = load_config(tiny_run)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    supernet = load_supernet(space, config.layout.supernet)
    arch = space.largest()
    ev = SubnetEvaluator(supernet, splits, calib_batches=2, images=37)
    prefix = splits.val.subset(np.arange(37))
    expected = accuracy(ev.subnet(arch), prefix, splits, resolution=arch.resolution, channels=space.in_chs)
    assert ev(arch) == expected and abs(expected * 37 - round(expected * 37)) < 1e-9
    everything = SubnetEvaluator(supernet, splits, calib_batches=2, images=10**6)
    assert len(everything.data.labels) == len(splits.val.labels)


def test_folding_bn_keeps_the_outputs_and_leaves_no_batchnorm():
    from edgenas.nas import fold_bn
    from edgenas.search_spaces import SPACES, Arch, build_subnet

    torch.manual_seed(0)
    net = build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3se-k5e2|k3e3"))
    recalibrate_bn(net, [torch.randn(32, 1, 16, 16) * 2 + 1 for _ in range(2)])  # BN statistics far from 0/1
    x = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        before = net(x)
        after = fold_bn(net)(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
