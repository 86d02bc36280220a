"""Several search workers sharing one study on a real PostgreSQL server (started on loopback here)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
import sqlalchemy
import yaml

from tests._system import require_system

_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url():
    require_system(
        bool(_BIN) and (os.geteuid() != 0 or shutil.which("runuser") is not None),
        "Debian's postgresql",
        "apt-get install postgresql",
    )
    import psycopg  # noqa: F401 - the [test] extra installs it; its absence is an error

    bin_dir = _BIN[-1]
    data = tempfile.mkdtemp(prefix="edgenas-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres([f"{bin_dir}/initdb", "-D", data, "--auth=trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            [
                f"{bin_dir}/pg_ctl",
                "-D",
                data,
                "-w",
                "-l",
                f"{data}/log",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {data}",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            _as_postgres([f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "edgenas"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/edgenas"
    finally:
        subprocess.run(_as_postgres([f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _cmd(config, url, study, n, worker):
    return [
        sys.executable,
        "-m",
        "edgenas.cli",
        "search",
        "--config",
        str(config),
        "--storage",
        url,
        "--study",
        study,
        "--n-trials",
        str(n),
        "--worker",
        str(worker),
        "--quiet",
    ]


@pytest.mark.slow
def test_three_workers_share_a_postgres_study(tiny_run, postgres_url):
    procs = [
        subprocess.Popen(
            _cmd(tiny_run, postgres_url, "pg-shared", 18, w), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    study = optuna.load_study(study_name="pg-shared", storage=postgres_url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 18 <= len(complete) <= 20  # up to one trial per other worker past the target
    assert len(trials) == len(complete)  # none lost, none failed, none left running
    assert len({t.number for t in trials}) == len(trials)


def _running_with_heartbeat(engine, study: str, min_complete: int = 0) -> list[int]:
    """The study's RUNNING trials that have a heartbeat, once it has ``min_complete`` complete trials."""
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE s.study_name = :study AND (t.state = 'COMPLETE' OR (t.state = 'RUNNING' AND h.trial_id IS NOT NULL))"
    )
    try:
        with engine.connect() as db:
            rows = db.execute(query, {"study": study}).fetchall()
    except sqlalchemy.exc.ProgrammingError:  # the schema is not created yet
        return []
    complete = sum(state == "COMPLETE" for _, state in rows)
    return [trial for trial, state in rows if state == "RUNNING"] if complete >= min_complete else []


@pytest.mark.slow
def test_a_killed_worker_does_not_stop_the_study(tiny_run, postgres_url, tmp_path):
    data = yaml.safe_load(tiny_run.read_text())
    data["search"].update(heartbeat_interval=1, grace_period=3)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    # Optuna's stale check knows only trials that have a heartbeat: a worker killed while its
    # sampler proposes (the trial created, its first heartbeat not yet written) leaves a trial
    # no worker fails. So the worker is frozen (SIGSTOP), the study read while nothing can
    # change it, and the worker killed only when a trial runs with its heartbeat, i.e. inside
    # the objective; otherwise it continues and is caught again.
    engine = sqlalchemy.create_engine(postgres_url)
    victim = subprocess.Popen(
        _cmd(config, postgres_url, "pg-kill", 10, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, killed = time.time() + 120, []
    while time.time() < deadline and victim.poll() is None:
        if _running_with_heartbeat(engine, "pg-kill", min_complete=2):
            victim.send_signal(signal.SIGSTOP)
            killed = _running_with_heartbeat(engine, "pg-kill", min_complete=2)
            if killed:
                victim.send_signal(signal.SIGKILL)  # killed in the middle of a trial
                break
            victim.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    victim.wait()
    engine.dispose()
    assert killed
    time.sleep(4)  # past the grace period: the next worker fails the stale trial and retries it
    subprocess.run(_cmd(config, postgres_url, "pg-kill", 10, 1), check=True, capture_output=True)
    study = optuna.load_study(study_name="pg-kill", storage=postgres_url)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 10
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) >= 1  # the killed trial is recorded, not lost
