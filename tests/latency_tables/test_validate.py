"""Validation on a real table: calibration fitted and stored, figures in range."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgenas.latency_tables import LatencyTable, LocalBackend, Predictor, accuracy_metrics, validate_table


def test_accuracy_metrics_by_hand():
    m = accuracy_metrics([1.0, 2.18, 2.9, 4.5], [1.0, 2.0, 3.0, 4.0])
    assert m["within_5pct"] == 0.5  # errors 0, +9 %, -3.3 %, +12.5 %
    assert m["within_10pct"] == 0.75
    assert m["mape_pct"] == pytest.approx((0 + 9 + 10 / 3 + 12.5) / 4)
    assert m["kendall_tau"] == 1.0


def test_validate_stores_calibration_and_predicts_measured(tiny_table, tmp_path):
    path = tmp_path / "t.json"
    shutil.copy(tiny_table, path)
    report = validate_table(path, LocalBackend(threads=1), n=24, resolutions=[16], repeats=2, progress=False)
    assert report["n_heldout"] == 12 and report["n_calibration"] == 12
    assert report["repeats"] == 2 and 0 < report["repeat_deviation"] < 0.2  # each subnet timed in two batches
    assert report["resolutions"] == [16]
    rows = report["rows"]
    assert len({r["arch"] for r in rows}) == 24
    ms = sorted(r["measured_ms"] for r in rows)
    assert ms[-1] > 1.5 * ms[0]  # the sample spans the latency range
    table = LatencyTable.load(path)
    assert table.calibration == report["calibration"]
    assert table.validation["heldout"] == report["heldout"]
    # Tiny nets run in tens of microseconds, where timer jitter is large: a loose bound here;
    # bench/lut_accuracy.py holds the real targets.
    assert report["heldout"]["mape_pct"] < 25
    assert report["heldout"]["kendall_tau"] > 0.5
    predictor = Predictor(table)
    from edgenas.latency_tables import pruned_arch_model
    from edgenas.search_spaces import Arch, spec_params

    held = [r for r in rows if r["split"] == "heldout" and not r["pruned"]]
    assert np.allclose([predictor.predict(Arch.parse(r["arch"])) for r in held], [r["predicted_ms"] for r in held])
    # up to a quarter of the subnets were measured pruned, predicted from their blocks (a share that prunes
    # nothing, every layer too narrow for it, is measured and counted as unpruned)
    pruned = [r for r in rows if r["pruned"]]
    assert 2 <= report["n_pruned"] == len(pruned) <= 6
    assert {r["split"] for r in pruned} == {"calibration", "heldout"}
    assert report["heldout_pruned"]["n"] == sum(r["split"] == "heldout" for r in pruned)
    # the two fastest archs (the first along the latency range) pruned the most: the calibration reaches the
    # smallest deployable models. The range is the table's raw sum (a calibration fitted on tiny nets' jitter
    # need not keep that order)
    assert [r["pruned"] for r in rows[:2]] == [0.4, 0.4]

    def raw(arch: str) -> float:
        return predictor.predict(Arch.parse(arch), calibrated=False)

    assert raw(rows[0]["arch"]) <= min(raw(r["arch"]) for r in held)
    space = predictor.space
    for r in pruned:
        arch = Arch.parse(r["arch"])
        _, specs = pruned_arch_model(space, arch, r["pruned"], "fp32")
        assert specs != tuple(space.block_specs(arch))  # channel counts no arch has
        assert np.isclose(predictor.predict_specs(specs), r["predicted_ms"])
        assert sum(map(spec_params, specs)) < sum(map(spec_params, space.block_specs(arch)))


def test_validate_warns_when_the_repeats_disagree(tiny_table, tmp_path, capsys):
    """A machine whose speed moves between a subnet's timings: the report says how far, and a warning asks for a
    quieter run."""
    import dataclasses

    path = tmp_path / "t.json"
    shutil.copy(tiny_table, path)
    backend = LocalBackend(threads=1)
    seen: dict[bytes, int] = {}
    first: dict[bytes, float] = {}

    class Drifting(LocalBackend):
        def measure(self, models, reference, protocol, noop=None):
            timings, ref, nop = backend.measure(models, reference, protocol, noop)
            out = []
            for model, t in zip(models, timings):
                # every timing of a subnet is its first one, so that a shared VM's own swings (10-15 % between
                # batches) cannot mask or add to the drift; then each subnet's every other timing 30 % slower
                first.setdefault(model, t.rel)
                seen[model] = seen.get(model, 0) + 1
                out.append(dataclasses.replace(t, rel=first[model] * (1.3 if seen[model] % 2 else 1.0)))
            return out, ref, nop

    report = validate_table(path, Drifting(threads=1), n=8, resolutions=[16], repeats=2, progress=False)
    assert report["repeat_deviation"] > 0.1
    assert "the machine was noisy" in capsys.readouterr().err  # the edgenas logger writes to stderr


def test_validate_reads_its_subnets_with_the_previous_calibration(tiny_table, tmp_path, capsys):
    """A calibration that reads every subnet twice as slow is caught by the next validation, with a warning; a
    table without one reports no level."""
    path = tmp_path / "t.json"
    shutil.copy(tiny_table, path)
    table = LatencyTable.load(path)
    table.calibration = None
    table.save(path)
    backend = LocalBackend(threads=1)
    first: dict[bytes, object] = {}

    class Steady(LocalBackend):
        def measure(self, models, reference, protocol, noop=None):
            # each subnet keeps its first timing: a shared VM's drift between two validations of tiny nets (27-45 %
            # here) would otherwise read as a level of its own
            timings, ref, nop = backend.measure(models, reference, protocol, noop)
            return [first.setdefault(m, t) for m, t in zip(models, timings)], ref, nop

    args = dict(n=8, resolutions=[16], repeats=1, progress=False)
    assert validate_table(path, Steady(threads=1), **args)["previous_calibration_level"] is None
    table = LatencyTable.load(path)
    table.calibration = {**table.calibration, "coef": [c * 2.0 for c in table.calibration["coef"]]}
    table.save(path)
    capsys.readouterr()
    level = validate_table(path, Steady(threads=1), **args)["previous_calibration_level"]
    assert len(first) == 8  # the second validation timed the same subnets, read again
    # 1 / 2, give or take how the first calibration (4 tiny subnets) reads the other four
    assert 0.35 < level < 0.7
    assert "the table's previous calibration reads these subnets -" in capsys.readouterr().err
