"""`edgenas run`: every stage into one run directory, skipped when unchanged, resumed after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.latency_tables import LatencyTable, TableMismatchError


def _config(tmp_path, **finalize):
    data = {
        "run_dir": str(tmp_path / "run"),
        "space": "tiny",
        "data": {"name": "digits"},
        "train": {"epochs": 2, "batch_size": 64, "threads": 1},
        "search": {"n_trials": 8, "population_size": 4, "calib_batches": 2},
        "finalize": {
            "distill_epochs": 1,
            "prune": {"step": 0.1, "max_steps": 1, "tolerance": 0.5},
            "qat": "always",  # whatever int8's timing on this CPU (finalize.qat: auto in test_finalize)
            "qat_epochs": 1,
            "lr": 0.05,
            "measure_rounds": 5,
            **finalize,
            # barely trained tiny models: near-tie logits, of which int8 rounding flips 1-5 %
            # (the check's own behaviour: test_finalize.test_a_failed_export_check_is_not_deployed)
            "accept_failed_checks": True,
        },
        "devices": [{"name": "cpu", "budget_ms": 1.0, "validate_n": 16}],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_run_kill_resume_skip_and_force(tmp_path):
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgenas.cli", "run", str(cfg), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "manifests" / "lut.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the training stage
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "manifests" / "lut.json").exists() and not (run / "manifests" / "report.json").exists()
    lut_manifest = (run / "manifests" / "lut.json").read_text()

    r = subprocess.run([sys.executable, "-m", "edgenas.cli", "run", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "lut: up to date, skipped" in r.stderr
    assert (run / "manifests" / "lut.json").read_text() == lut_manifest
    assert (run / "report" / "report.html").exists()
    assert (run / "finalize" / "cpu" / "model_card.json").exists()
    manifest = json.loads((run / "manifests" / "finalize.json").read_text())
    assert {"input_hash", "config", "versions", "device_fingerprints", "seed", "seconds"} <= set(manifest)
    for stage in ("train", "search", "finalize"):  # where torch ran each stage
        compute = json.loads((run / "manifests" / f"{stage}.json").read_text())["compute"]
        assert compute["device"] in ("cpu", "cuda:0", "mps") and compute["precision"] in ("fp32", "bf16", "fp16")

    # a re-run skips everything
    r = subprocess.run([sys.executable, "-m", "edgenas.cli", "run", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.count("up to date, skipped") == 5

    # --from forces that stage and the later ones
    before = (run / "manifests" / "train.json").read_text()
    done = pipeline.run(load_config(cfg), from_stage="finalize", progress=False)
    assert done["train"] == {"skipped": True} and "skipped" not in done["finalize"] and "skipped" not in done["report"]
    assert (run / "manifests" / "train.json").read_text() == before

    # a changed setting re-runs the stages it feeds, not the ones before; in finalize only the
    # steps the setting feeds run again (each step's record says what made it)
    cfg2 = _config(tmp_path, qat_epochs=2)
    done = pipeline.run(load_config(cfg2), progress=False)
    assert done["search"] == {"skipped": True} and "skipped" not in done["finalize"]
    card = json.loads((run / "finalize" / "cpu" / "model_card.json").read_text())
    assert card["config"]["qat_epochs"] == 2 and card["steps_made"] == ["qat"]
    assert set(card["step_seconds"]) >= {"searched", "distilled", "pruned", "qat"}  # the reused steps' times kept

    # more trials extend the study (its finished trials kept); finalize and report follow it
    import optuna

    url = f"sqlite:///{run / 'search' / 'study.db'}"
    first = {t.number: t.params for t in optuna.load_study(study_name="edgenas", storage=url).trials}
    data = yaml.safe_load(cfg2.read_text())
    data["search"]["n_trials"] = 12
    cfg2.write_text(yaml.safe_dump(data))
    done = pipeline.run(load_config(cfg2), progress=False)
    assert done["train"] == {"skipped": True} and "skipped" not in done["search"] and "skipped" not in done["report"]
    trials = optuna.load_study(study_name="edgenas", storage=url).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 12
    assert {t.number: t.params for t in trials if t.number in first} == first
    done = pipeline.run(load_config(cfg2), progress=False)
    assert all(v == {"skipped": True} for v in done.values())


def test_a_budget_is_a_search_input_not_a_table_input(tmp_path):
    base = pipeline._stage_inputs(load_config(_config(tmp_path)))
    data = yaml.safe_load(_config(tmp_path).read_text())
    data["devices"][0]["budget_ms"] = 2.0
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data))
    changed = pipeline._stage_inputs(load_config(tmp_path / "b.yaml"))
    assert changed["lut"] == base["lut"] and changed["train"] == base["train"]
    assert changed["search"] != base["search"] and changed["finalize"] != base["finalize"]
    data["devices"][0]["precision"] = "int8"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert pipeline._stage_inputs(load_config(tmp_path / "c.yaml"))["lut"] != base["lut"]


def test_where_and_how_fast_torch_runs_is_no_stage_input(tmp_path):
    base = pipeline._stage_inputs(load_config(_config(tmp_path)))
    data = yaml.safe_load(_config(tmp_path).read_text())
    data["train"].update(threads=2, device="cpu")
    data["search"]["device"] = "cpu"
    data["finalize"]["device"] = "cpu"
    data["data"]["workers"] = 4
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    assert pipeline._stage_inputs(load_config(tmp_path / "d.yaml")) == base
    data["data"]["augment"] = "none"  # what the supernet learns from is
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(data))
    assert pipeline._stage_inputs(load_config(tmp_path / "e.yaml"))["train"] != base["train"]


def test_an_unknown_stage_fails_before_any_work(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(ValueError, match="unknown stage 'deploy'"):
        pipeline.run(load_config(cfg), from_stage="deploy", progress=False)
    assert not (tmp_path / "run").exists()


def _devices(tmp_path, **device):
    data = yaml.safe_load(_config(tmp_path).read_text())
    data["devices"] = [{"name": "cpu", **device}]
    (tmp_path / "dev.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "dev.yaml")
    return pipeline.devices(config, pipeline.space_for(config, pipeline.splits_for(config)))


def test_an_impossible_budget_fails_naming_the_smallest_arch_latency(tiny_table, tmp_path):
    assert _devices(tmp_path, lut=str(tiny_table), budget_ms=100.0)[0].budget_ms == 100.0
    with pytest.raises(
        ValueError,
        match=r"budget_ms=1e-06 is below the smallest subnet's predicted latency at fp32 "
        r"\(0\.[0-9]+ ms, r16w0.5f32\|k3e2\|k3e2\): no arch can meet it$",
    ):
        _devices(tmp_path, lut=str(tiny_table), budget_ms=1e-6)
    dev = _devices(tmp_path, lut=str(tiny_table), ram_kb=1000.0, flash_kb=10000.0, objectives=["latency", "ram"])[0]
    assert dev.budgets == {"ram_kb:fp32": 1000.0, "flash_kb:fp32": 10000.0} and dev.objectives == ("latency", "ram")
    for key, name in (("ram_kb", "activation memory"), ("flash_kb", "model size")):
        with pytest.raises(
            ValueError,
            match=rf"^devices\[cpu\]\.{key}=1 is below the smallest subnet's {name} "
            rf"at fp32 \([0-9.]+ kB, r16.*\): no arch can meet it$",
        ):
            _devices(tmp_path, lut=str(tiny_table), **{key: 1.0})


@pytest.mark.parametrize(
    "device, fragment",
    [
        ({"precision": "int8"}, "precision: table has 'fp32', requested 'int8'"),
        ({"threads": 2}, "threads: table has 1, requested 2"),
        ({"device": "local"}, "device: table has 'local-cpu', requested 'local'"),
    ],
)
def test_a_user_table_measured_otherwise_is_refused(tiny_table, tmp_path, device, fragment):
    """A table of another precision, thread count or device would steer the search with other costs."""
    with pytest.raises(TableMismatchError, match=fragment):
        _devices(tmp_path, lut=str(tiny_table), **device)


@pytest.mark.slow
def test_a_changed_device_remeasures_only_its_own_table(tmp_path):
    data = yaml.safe_load(_config(tmp_path).read_text())
    data["devices"] = [{"name": "a", "validate_n": 8}, {"name": "b", "validate_n": 8}]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    luts = pipeline.build_luts(load_config(tmp_path / "two.yaml"), progress=False)
    kept = luts["a"].stat().st_mtime_ns
    data["devices"][1]["precision"] = "int8"
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    luts = pipeline.build_luts(load_config(tmp_path / "two.yaml"), progress=False)
    assert luts["a"].stat().st_mtime_ns == kept  # untouched
    b = LatencyTable.load(luts["b"])
    assert b.header["precision"] == "int8" and b.calibration is not None  # measured and validated again
    # a table the user supplied is never deleted: a mismatch is an error
    data["devices"][1] = {"name": "b", "lut": str(luts["b"]), "precision": "fp32"}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(TableMismatchError, match="does not match the request"):
        pipeline.build_luts(load_config(tmp_path / "two.yaml"), progress=False)
    assert luts["b"].exists()


def test_a_budget_of_a_reference_is_its_predicted_latency_on_the_device(tiny_run, tmp_path):
    import yaml

    from edgenas.latency_tables import LatencyTable, Predictor
    from edgenas.search_spaces import reference_archs

    data = yaml.safe_load(tiny_run.read_text())
    lut = data["devices"][0]["lut"]
    data["devices"] = [
        {"name": "same", "lut": lut, "budget_of": "mbv3-large-1"},
        # above the smallest subnet's latency however the tiny table was timed (mbv3-large-1 is ~2x it)
        {"name": "faster", "lut": lut, "budget_of": "mbv3-large-1", "budget_scale": 0.75},
        {"name": "arch", "lut": lut, "budget_of": "r24|k3e3-k3e3|k5e3-k5e3"},
    ]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    config = load_config(tmp_path / "c.yaml")
    space = pipeline.space_for(config, pipeline.splits_for(config))
    predictor = Predictor(LatencyTable.load(lut), space)
    ref_ms = predictor.predict(reference_archs(space)["mbv3-large-1"])
    budgets = {d.name: d.budget_ms for d in pipeline.devices(config, space)}
    assert budgets["same"] == pytest.approx(ref_ms) and budgets["faster"] == pytest.approx(0.75 * ref_ms)
    assert budgets["arch"] == pytest.approx(predictor.predict(space.parse("r24|k3e3-k3e3|k5e3-k5e3")))

    data["devices"] = [{"name": "bad", "lut": lut, "budget_of": "mbv3-huge"}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="budget_of='mbv3-huge' is neither a MobileNetV3 layout"):
        pipeline.devices(load_config(tmp_path / "c.yaml"), space)
