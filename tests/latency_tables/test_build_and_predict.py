"""Building (complete, resumable after kill -9) and predicting from a real table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgenas.latency_tables import LatencyTable, MissingEntryError, Predictor, table_specs
from edgenas.search_spaces import Arch


def test_table_has_every_key_with_sane_values(tiny_table, tiny):
    table = LatencyTable.load(tiny_table)
    keys = {s.key for s in table_specs(tiny)}
    assert set(table.entries) == keys and len(keys) == len(tiny.all_block_specs()) + 8  # 4 classifiers x 2 probes
    for e in table.entries.values():
        assert e["ms"] > 0 and e["rel"] > 0 and e["runs"] >= 5 and e["params"] > 0
    h = table.header
    assert h["precision"] == "fp32" and h["threads"] == 1 and h["reference_ms"] > 0
    assert 0 < h["noop_ms"] < 0.1  # the per-call overhead is microseconds
    assert "drift" in h and h["build_seconds"] > 0
    assert h["coverage"] == {"resolutions": [16, 24], "widths": [0.5, 1.0]}


def test_predictor_sum_matches_hand_computation(tiny_table):
    table = LatencyTable.load(tiny_table)
    predictor = Predictor(table)
    arch = Arch.parse("r16|k3e2-k5e3se|k3e2")
    noop = table.header["noop_rel"]
    by_hand = noop + sum(table.entries[s.key]["rel"] - noop for s in predictor.space.block_specs(arch))
    assert predictor.predict_rel(arch, calibrated=False) == pytest.approx(by_hand)
    assert predictor.predict(arch, calibrated=False) == pytest.approx(by_hand * table.header["reference_ms"])
    edges = sum(s.in_chs * s.in_size**2 + s.out_chs * s.out_size**2 for s in predictor.space.block_specs(arch))
    assert predictor.features(arch)["edges"] == pytest.approx(edges / 1e5)  # activations at the blocks' edges
    assert predictor.features(arch)["blocks"] == len(predictor.space.block_specs(arch))
    bd = predictor.breakdown(arch)
    assert len(bd) == len(predictor.space.block_specs(arch))


def test_predictions_grow_with_the_arch(tiny_table):
    predictor = Predictor(LatencyTable.load(tiny_table))
    # the two ends of the space: at 16 px alone, per-node costs kept the ratio near 1.5 on a loaded machine
    small = predictor.predict(Arch.parse("r16w0.5|k3e2|k3e2"))
    large = predictor.predict(Arch.parse("r24|k5e3se-k5e3se|k5e3se-k5e3se"))
    assert large > 1.5 * small


def test_missing_entry_names_the_command(tiny_table):
    table = LatencyTable.load(tiny_table)
    arch = Arch.parse("r24|k3e2|k3e2")
    del table.entries[Predictor(table).space.block_specs(arch)[2].key]
    with pytest.raises(MissingEntryError) as err:
        Predictor(table).predict(arch)
    msg = str(err.value)
    assert "r24" in msg and "edgenas lut build --space tiny --device local-cpu --precision fp32" in msg


def test_a_pruned_block_is_priced_on_the_line_through_its_shape(tiny_table):
    """Where cost is exactly linear in multiply-adds over channels rounded up to 16 (a runtime computing 16
    channels at a time), the predictor finds that block from the table alone and its estimates are exact."""
    import dataclasses

    from edgenas.latency_tables._predict import ChannelPricing
    from edgenas.search_spaces import BlockSpec

    table = LatencyTable.load(tiny_table)
    noop = table.header["noop_rel"]
    for key, e in table.entries.items():
        e["rel"] = noop + 0.01 + 1e-7 * ChannelPricing(16).macs(BlockSpec.from_key(key))
    predictor = Predictor(table)
    arch = Arch.parse("r24|k5e3se-k3e2|k3e3")
    specs = predictor.space.block_specs(arch)
    assert predictor.predict_specs(specs) == pytest.approx(predictor.predict(arch))
    pruned = tuple(dataclasses.replace(s, mid_chs=s.mid_chs - 4) if s.kind == "ir" else s for s in specs)
    assert all(s not in {BlockSpec.from_key(k) for k in table.entries} for s in pruned if s.kind == "ir")
    by_hand = noop + sum(0.01 + 1e-7 * ChannelPricing(16).macs(s) for s in pruned)
    assert predictor.predict_specs(pruned, calibrated=False) == pytest.approx(by_hand * table.header["reference_ms"])
    assert predictor.channel_pricing == ChannelPricing(16)
    with pytest.raises(MissingEntryError):
        predictor.predict_specs(pruned, estimate=False)


def test_a_depthwise_kernel_slow_at_counts_its_vector_width_does_not_divide_is_found(tiny_table):
    """Where a 5x5 depthwise convolution of a channel count 16 does not divide costs twice as much per
    multiply-add (ncnn packs channels by 16 where the count allows, else by 8), the predictor finds that from
    the table alone and prices pruned blocks exactly."""
    import dataclasses

    from edgenas.latency_tables._predict import ChannelPricing
    from edgenas.search_spaces import BlockSpec

    truth = ChannelPricing(8, ((5, 16, 2.0),))
    table = LatencyTable.load(tiny_table)
    noop = table.header["noop_rel"]
    for key, e in table.entries.items():
        e["rel"] = noop + 0.01 + 1e-7 * truth.macs(BlockSpec.from_key(key))
    predictor = Predictor(table)
    specs = predictor.space.block_specs(Arch.parse("r24|k5e3|k5e3"))
    pruned = tuple(dataclasses.replace(s, mid_chs=s.mid_chs - 8) if s.kind == "ir" else s for s in specs)
    by_hand = noop + sum(0.01 + 1e-7 * truth.macs(s) for s in pruned)
    assert predictor.predict_specs(pruned, calibrated=False) == pytest.approx(by_hand * table.header["reference_ms"])
    assert predictor.channel_pricing == truth
    slowed = pruned[3]  # the second stage's block: 48 channels pruned to 40, which 16 does not divide
    assert slowed.mid_chs == 40 and truth.macs(slowed) > ChannelPricing(8).macs(slowed)


def test_depthwise_multiply_adds_dearer_than_the_others_are_priced_apart(tiny_table):
    """Where a depthwise multiply-add costs 20 times another (ExecuTorch's 7x7 depthwise kernels), a block
    pruned in its input and output but not in its depthwise channels is priced on both terms, exactly."""
    import dataclasses

    from edgenas.latency_tables._predict import ChannelPricing
    from edgenas.search_spaces import BlockSpec

    pricing = ChannelPricing(8)

    def cost(spec: BlockSpec) -> float:
        depthwise = pricing.depthwise_macs(spec)
        return 0.01 + 1e-8 * (pricing.macs(spec) - depthwise) + 2e-7 * depthwise

    table = LatencyTable.load(tiny_table)
    noop = table.header["noop_rel"]
    for key, e in table.entries.items():
        e["rel"] = noop + cost(BlockSpec.from_key(key))
    predictor = Predictor(table)
    assert predictor.channel_pricing.split_depthwise
    block = next(
        s for s in predictor.space.block_specs(Arch.parse("r24|k5e3-k5e3|k5e3")) if s.kind == "ir" and s.residual
    )
    pruned = dataclasses.replace(block, in_chs=block.in_chs - 8, out_chs=block.out_chs - 8)
    assert predictor.predict_specs([pruned], calibrated=False) == pytest.approx(
        (noop + cost(pruned)) * table.header["reference_ms"]
    )


def test_a_classifier_is_priced_per_input_channel_and_its_slow_hidden_widths_found(tiny_table):
    """Where a classifier costs per input channel besides its multiply-adds, and its hidden layer twice as
    much at counts 8 past a multiple of 16 (XNNPACK's tails), the line through the table's classifiers at
    their probed hidden widths finds both, and prices a pruned classifier exactly."""
    import dataclasses

    from edgenas.latency_tables._predict import ChannelPricing
    from edgenas.search_spaces import BlockSpec

    truth = ChannelPricing(8, slow_classifier=(16, 2.0))

    def cost(spec: BlockSpec) -> float:
        return 0.01 + 1e-7 * truth.macs(spec) + (3e-5 * spec.in_chs if spec.kind == "classifier" else 0.0)

    table = LatencyTable.load(tiny_table)
    noop = table.header["noop_rel"]
    for key, e in table.entries.items():
        e["rel"] = noop + cost(BlockSpec.from_key(key))
    predictor = Predictor(table)
    assert predictor.channel_pricing == truth
    head = predictor.space.block_specs(Arch.parse("r24|k5e3|k5e3"))[-1]
    for hidden in (40, 48):  # 8 past 32: slowed; a multiple of 16: not
        pruned = dataclasses.replace(head, in_chs=head.in_chs - 8, mid_chs=hidden)
        assert predictor.predict_specs([pruned], calibrated=False) == pytest.approx(
            (noop + cost(pruned)) * table.header["reference_ms"]
        )


@pytest.mark.slow
def test_killed_build_resumes_and_keeps_entries(tmp_path):
    out = tmp_path / "t.json"
    cmd = [
        sys.executable,
        "-m",
        "edgenas.cli",
        "lut",
        "build",
        "--space",
        "tiny",
        "--resolutions",
        "24",
        "--rounds",
        "4",
        "--batch-size",
        "6",
        "--quiet",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = LatencyTable.load(out)  # the file is whole, never half written
    total = 76  # the blocks of tiny at 24 px (classifiers of both its hidden widths), and their probed hidden widths
    assert 0 < len(partial.entries) < total
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") and not p.startswith(".")]
    subprocess.run(cmd, check=True)
    full = LatencyTable.load(out)
    assert len(full.entries) == total
    kept = [k for k, e in partial.entries.items() if e["spread"] <= 0.10]
    assert kept and all(full.entries[k]["ms"] == partial.entries[k]["ms"] for k in kept)
    assert len(full.header["batches"]) > len(partial.header["batches"])


def test_fit_calibration_recovers_a_known_line():
    from edgenas.latency_tables import fit_calibration

    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, 30)
    edges = rng.uniform(0, 3, 30)
    blocks = rng.integers(8, 16, 30).astype(float)
    feats = [
        {"t": v, "params": 0.1 * v + rng.uniform(0, 0.01), "edges": e, "blocks": b, "one": 1.0}
        for v, e, b in zip(t, edges, blocks)
    ]
    cal = fit_calibration(feats, 0.8 * t + 0.5)
    assert cal["features"] == ["t", "one"]
    assert cal["coef"] == pytest.approx([0.8, 0.5], rel=1e-6)
    # blocks timed alone that paid for layout conversions at their edges: the calibration takes them off
    cal = fit_calibration(feats, 1.1 * t - 0.2 * edges + 0.5)
    assert cal["features"] == ["t", "edges", "one"]
    assert cal["coef"] == pytest.approx([1.1, -0.2, 0.5], rel=1e-6)
    # a network that pays a fixed cost per block its blocks timed alone did not show
    cal = fit_calibration(feats, 1.2 * t + 0.05 * blocks + 0.1)
    assert cal["features"] == ["t", "blocks", "one"]
    assert cal["coef"] == pytest.approx([1.2, 0.05, 0.1], rel=1e-6)
    assert cal["params_range"] == pytest.approx([min(f["params"] for f in feats), max(f["params"] for f in feats)])
    with pytest.raises(ValueError, match="at least 4"):
        fit_calibration(feats[:2], [1.0, 2.0])


def test_predictions_beyond_the_calibrations_parameters_are_named_extrapolated(tiny_table):
    """The calibration vouches for the archs it was fitted on; one far larger is flagged, and a table whose
    calibration predates the kept range says nothing rather than guess."""
    import dataclasses

    from edgenas.latency_tables import LatencyTable, Predictor

    table = LatencyTable.load(tiny_table)
    space = Predictor(table).space
    small, large = space.block_specs(space.smallest()), space.block_specs(space.largest())
    params = [Predictor(table).features(a)["params"] for a in (space.smallest(), space.largest())]
    fitted = dataclasses.replace(table, calibration={**table.calibration, "params_range": [params[0], params[0]]})
    assert Predictor(fitted).extrapolation(small) is None
    above = dataclasses.replace(
        table, calibration={**table.calibration, "params_range": [2 * params[1], 3 * params[1]]}
    )
    assert Predictor(above).extrapolation(small) is None  # fewer parameters: no cache to outgrow
    reason = Predictor(fitted).extrapolation(large)
    assert reason and f"{params[1]:.2f} M parameters" in reason and "extrapolated" in reason
    # the table's own validation fitted archs from the smallest up (the largest it holds out)
    assert Predictor(table).extrapolation(small) is None
    old = dataclasses.replace(table, calibration={k: v for k, v in table.calibration.items() if k != "params_range"})
    assert Predictor(old).extrapolation(large) is None


def test_blocks_left_to_measure_are_timed_with_the_tables_own_protocol(tiny_table, tiny, tmp_path):
    """A finished table is used as it was measured (the classifier probes it lacks are timed with its own
    protocol); a table with blocks left refuses to mix in another protocol (tables timed before turns began
    with an untimed run read as turn_warmup 0)."""
    from edgenas.latency_tables import LocalBackend, Protocol, TableMismatchError, build_table

    backend = LocalBackend(threads=1)
    data = json.loads(tiny_table.read_text())
    finished = tmp_path / "finished.json"
    finished.write_text(json.dumps(data))
    build_table(tiny, backend, finished, protocol=Protocol(rounds=7), progress=False)  # nothing to measure
    assert LatencyTable.load(finished).entries == data["entries"]

    probes = {s.key for s in table_specs(tiny)} - {s.key for s in tiny.all_block_specs()}
    unprobed = tmp_path / "unprobed.json"  # finished before tables timed their classifiers' probes
    unprobed.write_text(json.dumps({**data, "entries": {k: e for k, e in data["entries"].items() if k not in probes}}))
    build_table(tiny, backend, unprobed, protocol=Protocol(rounds=7), progress=False, drift_check=0)
    assert set(LatencyTable.load(unprobed).entries) == set(data["entries"])  # the probes, measured as it was

    missing = sorted(k for k in data["entries"] if k not in probes)[:2]
    for key in missing:
        del data["entries"][key]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    with pytest.raises(TableMismatchError, match="measured with protocol .* would mix the two"):
        build_table(tiny, backend, partial, protocol=Protocol(rounds=7), progress=False)
    build_table(tiny, backend, partial, protocol=Protocol(rounds=5), progress=False, drift_check=0)
    assert set(missing) <= set(LatencyTable.load(partial).entries)

    del data["header"]["protocol"]["turn_warmup"]  # an earlier version's table
    older = tmp_path / "older.json"
    older.write_text(json.dumps(data))
    assert LatencyTable.load(older).header["protocol"]["turn_warmup"] == 0
    with pytest.raises(TableMismatchError, match="would mix"):
        build_table(tiny, backend, older, protocol=Protocol(rounds=5), progress=False)
