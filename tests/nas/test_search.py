"""The search: Pareto output, constraints, resuming, several workers on one study."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.io import read_json
from edgenas.nas import SearchConfig, device_choice, device_front, pareto_rows, suggest_arch
from edgenas.reports import RunFiles, pareto_data
from edgenas.search_spaces import SPACES


def _dominated(r, others, lat):
    def beats(o):
        better = o["accuracy"] > r["accuracy"] or o[lat] < r[lat]
        return o["accuracy"] >= r["accuracy"] and o[lat] <= r[lat] and better

    return any(beats(o) for o in others)


def test_suggest_covers_the_space():
    space = SPACES["tiny"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = {str(suggest_arch(study.ask(), space)) for _ in range(200)}
    assert len(archs) > 50
    for a in archs:
        space.parse(a)


def test_search_writes_a_non_dominated_feasible_front(tiny_run, tmp_path):
    config = load_config(tiny_run)
    dev = pipeline.devices(config, pipeline.space_for(config, pipeline.splits_for(config)))[0]
    small, large = dev.predictor.predict(SPACES["tiny"].smallest()), dev.predictor.predict(SPACES["tiny"].largest())
    # halfway between the measured extremes: rules out the bigger archs and keeps the smaller ones
    # whatever the ratio of the two on this machine (a fixed fraction of the largest fell below the smallest)
    budget = small + 0.5 * (large - small)
    path = tmp_path / "c.yaml"
    data = yaml.safe_load(tiny_run.read_text())
    data["devices"][0]["budget_ms"] = budget
    data["search"]["storage"] = f"sqlite:///{tmp_path / 'study.db'}"
    data["search"]["n_trials"] = 14
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    study = pipeline.search(config, progress=False)
    rows, front = pareto_rows(study)
    assert len(rows) == 14 and front
    lat = "latency_ms:cpu"
    assert all(r[lat] <= budget for r in front)  # constraints respected by the reported set
    assert any(not r["feasible"] for r in rows)  # the budget ruled archs out, so the check below checks
    assert all(r["feasible"] == (r[lat] <= budget) for r in rows)
    feasible = [r for r in rows if r["feasible"]]
    assert all(not _dominated(r, feasible, lat) for r in front)
    assert all(_dominated(r, front, lat) or r["arch"] in {f["arch"] for f in front} for r in feasible)
    csv = (config.layout.search / "pareto.csv").read_text().splitlines()
    assert csv[0].startswith("trial,arch,accuracy,latency_ms:cpu") and len(csv) == len(front) + 1
    # resuming with a larger budget of trials adds trials and keeps the old ones
    study2 = pipeline.search(load_config(path, {"search": {"n_trials": 16}}), progress=False)
    numbers = [t.number for t in study2.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(numbers) == 16 and set(range(14)) <= set(numbers)


def test_several_devices_each_get_their_own_front_and_winner(tiny_run, tmp_path):
    config = load_config(tiny_run)
    dev = pipeline.devices(config, pipeline.space_for(config, pipeline.splits_for(config)))[0]
    tiny = SPACES["tiny"]
    small, large = dev.predictor.predict(tiny.smallest()), dev.predictor.predict(tiny.largest())
    data = yaml.safe_load(tiny_run.read_text())
    table = data["devices"][0]["lut"]
    data["devices"] = [  # the same table twice: a tight budget and a loose one
        {"name": "tight", "lut": table, "budget_ms": small + 0.3 * (large - small)},
        {"name": "loose", "lut": table, "budget_ms": small + 0.8 * (large - small)},
    ]
    data["run_dir"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    shutil.copy(config.layout.supernet, tmp_path / "run" / "supernet.pt")
    data["search"].update(n_trials=14, storage=f"sqlite:///{tmp_path / 'study.db'}")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    study = pipeline.search(config, progress=False)
    rows, _ = pareto_rows(study)
    budgets = {d["name"]: d["budget_ms"] for d in data["devices"]}
    for r in rows:  # feasible = within at least one device's budget (each device gets its own model)
        within = {d: r[f"latency_ms:{d}"] <= b for d, b in budgets.items()}
        assert r["feasible"] == any(within.values())
        assert all(r[f"within_budget:{d}"] == w for d, w in within.items())
    assert any(r["within_budget:loose"] and not r["within_budget:tight"] for r in rows)  # not only the overlap
    per_device = read_json(config.layout.front)["per_device"]
    for d, b in budgets.items():
        lat = f"latency_ms:{d}"
        front, ok = per_device[d], [r for r in rows if r[lat] <= b]
        assert front == device_front(rows, d) and front
        assert all(r[lat] <= b for r in front)
        assert all(not _dominated(r, ok, lat) for r in front)
        assert all(_dominated(r, front, lat) or r["arch"] in {f["arch"] for f in front} for r in ok)
        # the chosen arch: the slowest within the budget of those within tie_pts of the most accurate
        winner = next(r for r in ok if r["arch"] == pipeline.choose_arch(config, d))
        tied = [r for r in ok if r["accuracy"] >= max(r["accuracy"] for r in ok) - config.search.tie_pts / 100]
        assert winner in tied and winner[lat] == max(r[lat] for r in tied)
        # the report draws each device against its own budget and front
        data = pareto_data(RunFiles(config.run_dir), d)
        trials = data[data["kind"].isin(["trial", "pareto front", "trial (over budget)"])]
        assert ((trials["kind"] == "trial (over budget)") == (trials["latency_ms"] > b)).all()
        assert set(data[data["kind"] == "pareto front"]["arch"]) == {r["arch"] for r in front}


def test_a_device_gets_the_slowest_arch_tied_with_the_most_accurate():
    rows = [
        {"arch": a, "accuracy": acc, "latency_ms:d": ms, "within_budget:d": ms <= 2.5}
        for a, acc, ms in [("a", 0.900, 1.0), ("b", 0.898, 1.5), ("c", 0.890, 2.0), ("d", 0.950, 3.0)]
    ]
    assert device_choice(rows, "d", 0.0)["arch"] == "a"  # the most accurate within the budget
    assert device_choice(rows, "d", 0.3)["arch"] == "b"  # b's 0.2-pt deficit is a tie: the slower one
    assert device_choice(rows, "d", 2.0)["arch"] == "c"  # never d, more accurate but over the budget
    assert device_choice([r | {"within_budget:d": False} for r in rows], "d", 0.3) is None


def test_impossible_budget_fails_at_load(tiny_run, tmp_path):
    data = yaml.safe_load(tiny_run.read_text())
    data["devices"][0]["budget_ms"] = 1e-6
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="below the smallest subnet's predicted latency"):
        pipeline.search(load_config(path), progress=False)


@pytest.mark.slow
def test_two_workers_share_one_study(tiny_run, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [
        sys.executable,
        "-m",
        "edgenas.cli",
        "search",
        "--config",
        str(tiny_run),
        "--storage",
        url,
        "--study",
        "shared",
        "--n-trials",
        "16",
        "--quiet",
    ]
    procs = [
        subprocess.Popen(cmd + ["--worker", str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 16 <= len(complete) <= 17  # a worker may finish one trial past the target while the other stops
    assert len(trials) == len(complete)  # nothing failed, nothing left running
    assert len({t.number for t in trials}) == len(trials)
    # both workers contributed: their samplers are seeded differently
    archs = [t.user_attrs["arch"] for t in complete]
    assert len(set(archs)) >= 0.8 * len(archs)
    accs = {}
    for t in complete:  # an arch evaluated twice gets the same accuracy (reused, not re-measured)
        assert accs.setdefault(t.user_attrs["arch"], t.values[0]) == t.values[0]
    assert np.isfinite([t.values[0] for t in complete]).all()


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://u@localhost/db", "database driver is not installed"),
        ("foo://x", "not a database URL"),
        ("postgresql+psycopg://u@127.0.0.1:1/db", "cannot open the database"),
        ("sqlite:////nonexistent/dir/study.db", "unable to open database file"),
    ],
)
def test_a_storage_that_cannot_open_is_one_line_at_once(url, fragment, monkeypatch, tiny_run, tmp_path, capsys):
    """Only another worker's schema creation is retried; a wrong URL or missing driver is reported at once."""
    from edgenas.cli import main
    from edgenas.nas import make_storage

    calls = []
    real = optuna.storages.RDBStorage
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(ValueError, match=fragment):
        make_storage(url)
    assert len(calls) == 1
    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    shutil.copy(tiny_run.parent / "supernet.pt", tmp_path / "run" / "supernet.pt")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert main(["search", "--config", str(tmp_path / "c.yaml"), "--storage", url, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgenas: error: storage") and fragment in err[0]


def test_nsga2_population_follows_the_trial_budget():
    from edgenas.nas._search import population_size

    assert [population_size(SearchConfig(n_trials=n)) for n in (10, 40, 100, 250, 1000)] == [8, 8, 20, 50, 50]
    assert population_size(SearchConfig(n_trials=100, population_size=6)) == 6
