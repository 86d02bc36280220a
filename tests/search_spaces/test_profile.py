"""Params and FLOPs: a hand computation for one arch."""

from __future__ import annotations

from edgenas.search_spaces import SPACES, Arch, profile_arch
from edgenas.search_spaces._profile import block_profile
from edgenas.search_spaces._space import BlockSpec


def test_conv_block_flops_by_hand():
    spec = BlockSpec("conv", 3, 16, 32, 3, 2, act="hswish")
    params, flops = block_profile(spec)
    assert flops == 16 * 3 * 9 * 16 * 16  # out_chs * in_chs * k*k * out_h * out_w
    assert params == 16 * 3 * 9 + 2 * 16  # conv weight + BN weight and bias


def test_ir_block_flops_by_hand():
    spec = BlockSpec("ir", 16, 24, 8, 5, 2, 48, False, "relu6")
    _, flops = block_profile(spec)
    expand = 48 * 16 * 8 * 8
    dw = 48 * 25 * 4 * 4
    project = 24 * 48 * 4 * 4
    assert flops == expand + dw + project


def test_profile_sums_blocks_and_grows_with_the_arch():
    space = SPACES["tiny"]
    small = profile_arch(space, space.smallest())
    large = profile_arch(space, space.largest())
    assert small.flops == sum(f for _, _, f in small.blocks)
    assert small.params < large.params and small.flops < large.flops
    wide = profile_arch(space, Arch.parse("r24|k3e2|k3e2"))
    narrow = profile_arch(space, Arch.parse("r24w0.5|k3e2|k3e2"))
    assert narrow.flops < wide.flops


def test_spec_macs_equal_fvcore_for_every_block_of_a_space():
    from edgenas.search_spaces import spec_macs
    from edgenas.search_spaces._profile import fvcore_flops

    for spec in SPACES["tiny"].all_block_specs():
        assert spec_macs(spec) == fvcore_flops(spec), spec.key
    for spec in SPACES["small"].block_specs(SPACES["small"].largest()):  # SE and residual blocks of every kind
        assert spec_macs(spec) == fvcore_flops(spec), spec.key


def test_current_specs_read_a_pruned_subnets_channels():
    """Unpruned: the arch's specs; pruned: a subnet built from them has the pruned layers' shapes (SE aside)."""

    from edgenas.pruning import PruneConfig
    from edgenas.search_spaces import SubNet, build_subnet, current_specs
    from tests._pruning import prune_untrained

    space = SPACES["tiny"]
    arch = Arch.parse("r16|k3e3se-k5e2|k3e3")
    net = build_subnet(space, arch).eval()
    assert current_specs(net) == space.block_specs(arch)
    pruned, _ = prune_untrained(net, 16, PruneConfig(step=0.3, max_steps=1, tolerance=1.0))
    specs = current_specs(pruned)
    assert sum(s.mid_chs for s in specs) < sum(s.mid_chs for s in space.block_specs(arch))

    def shapes(m):
        return [tuple(p.shape) for n, p in m.named_parameters() if ".se." not in n]

    assert shapes(SubNet(specs)) == shapes(pruned)
