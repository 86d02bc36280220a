"""The predictor-guided sampler: an Optuna sampler whose proposals are screened by a predictor and the tables."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from edgenas.latency_tables import LatencyTable, Predictor
from edgenas.nas import DeviceObjective, SearchConfig, pareto_rows, run_search, trial_figures
from edgenas.nas._guided import arch_features, arch_params, startup_trials
from edgenas.search_spaces import SPACES, profile_arch


def test_arch_params_are_read_back_as_the_arch():
    space = SPACES["tiny"]
    rng = np.random.default_rng(0)
    from edgenas.nas import suggest_arch

    for _ in range(20):
        arch = space.sample(rng)
        trial = optuna.trial.FixedTrial(arch_params(arch, space, rng))
        assert suggest_arch(trial, space) == arch
        f = arch_features(arch, space)
        assert set(np.unique(f)) <= {0.0, 1.0} and f.sum() > 0


def test_startup_follows_the_budget():
    assert [startup_trials(n) for n in (10, 100, 500)] == [8, 20, 40]


def test_guided_search_screens_by_budget_and_learns(tiny_table, tmp_path):
    """A synthetic accuracy that the encoding can learn: after the random start, every proposal is within the
    budget (the tables screen it) and better than the random start's on average."""
    space = SPACES["tiny"]
    predictor = Predictor(LatencyTable.load(tiny_table), space)
    budget = float(np.median([predictor.predict(space.sample(np.random.default_rng(i))) for i in range(50)]))
    device = DeviceObjective("cpu", predictor, budget)

    def accuracy(arch) -> float:  # more parameters and SE are better, like a real supernet's trend
        prof = profile_arch(space, arch)
        return float(np.log(prof.params) / 20 + 0.02 * sum(b.se for b in arch.blocks))

    config = SearchConfig(sampler="guided", n_trials=30, seed=1)
    study = run_search(space, accuracy, [device], config, tmp_path, progress=False)
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    assert len(trials) == 30
    start, guided = trials[: startup_trials(30)], trials[startup_trials(30) :]
    assert all(t.user_attrs["latency_ms:cpu"] <= budget for t in guided)
    feasible_start = [t.values[0] for t in start if t.user_attrs["latency_ms:cpu"] <= budget]
    assert np.mean([t.values[0] for t in guided]) > np.mean(feasible_start)
    assert len({t.user_attrs["arch"] for t in guided}) == len(guided)  # no arch proposed twice
    history = (tmp_path / "predictor_worker0.json").read_text()
    assert '"kendall_tau"' in history and '"mae"' in history
    # resuming with more trials extends the same study
    study = run_search(
        space, accuracy, [device], SearchConfig(sampler="guided", n_trials=34, seed=1), tmp_path, progress=False
    )
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 34


@pytest.mark.parametrize("sampler", ["random", "guided", "nsga2"])
def test_memory_and_size_budgets_remove_exactly_the_trials_over_them(tiny_table, tmp_path, sampler):
    """RAM and flash budgets (at the precision of the device's table, fp32 here) join latency in one
    constraint: a trial is feasible exactly when every figure is within its budget."""
    space = SPACES["tiny"]
    predictor = Predictor(LatencyTable.load(tiny_table), space)
    figures = [trial_figures(space, space.sample(np.random.default_rng(i)), []) for i in range(60)]
    ram = float(np.median([f["ram_kb:fp32"] for f in figures]))
    flash = float(np.quantile([f["flash_kb:fp32"] for f in figures], 0.7))
    device = DeviceObjective("cpu", predictor, objectives=("latency", "ram"), ram_kb=ram, flash_kb=flash)

    def accuracy(arch) -> float:
        return float(np.log(profile_arch(space, arch).params) / 20)

    study = run_search(
        space, accuracy, [device], SearchConfig(sampler=sampler, n_trials=24, seed=2), tmp_path, progress=False
    )
    assert len(study.directions) == 3  # accuracy, latency, activation memory
    rows, front = pareto_rows(study)
    within = [r["ram_kb:fp32"] <= ram and r["flash_kb:fp32"] <= flash for r in rows]
    assert [r["feasible"] for r in rows] == within == [r["within_budget:cpu"] for r in rows]
    assert 0 < sum(within) < len(rows) or sampler == "guided"
    assert front and all(r["feasible"] for r in front)
    for r in rows:  # every trial records size and memory at both precisions
        assert r["flash_kb:int8"] < r["flash_kb:fp32"] and r["ram_kb:int8"] < r["ram_kb:fp32"]
    if sampler == "guided":  # after its random start, it proposes only archs within the budgets
        assert all(within[startup_trials(24) :])


def test_objectives_name_known_figures(tiny_table):
    predictor = Predictor(LatencyTable.load(tiny_table), SPACES["tiny"])
    with pytest.raises(ValueError, match="objectives \\['sram'\\] are not among"):
        DeviceObjective("cpu", predictor, objectives=("sram",))
