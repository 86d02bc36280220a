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
    supernet = load_supernet(space, config.supernet_path)
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
    supernet = load_supernet(space, config.supernet_path)
    arch = space.largest()
    ev = SubnetEvaluator(supernet, splits, calib_batches=2, images=37)
    prefix = splits.val.subset(np.arange(37))
    expected = accuracy(ev.subnet(arch), prefix, splits, resolution=arch.resolution, channels=space.in_chs)
    assert ev(arch) == expected and abs(expected * 37 - round(expected * 37)) < 1e-9
    everything = SubnetEvaluator(supernet, splits, calib_batches=2, images=10**6)
    assert len(everything.data.labels) == len(splits.val.labels)
