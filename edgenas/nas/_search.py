"""The Optuna search: accuracy vs predicted latency, memory and size on one or more devices.

Every arch choice of the space is a categorical parameter (all block slots are sampled,
so every trial has the same parameters; slots beyond a stage's depth are ignored).
Objectives: validation accuracy (maximise) and, per device, what it minimises: its
calibrated predicted latency by default, its peak activation memory (``ram``) and its
model size (``flash``) at its precision on request. Every trial records its latency on
every device and its size and activation memory at fp32 and int8
(:func:`edgenas.search_spaces.footprint`). A device's budgets (``budget_ms``, ``ram_kb``,
``flash_kb``) become one Optuna constraint honoured by the NSGA-II, TPE and guided
samplers: a device is met when all its budgets are (its excess is the largest
``figure / budget - 1``). Each device gets its own model, so a trial is feasible when it
meets at least one device (constraint: the smallest excess over the devices); requiring
every device at once would confine the search to archs that fit all of them, and every
device's winner would be the same arch. The reported Pareto set holds feasible trials
only, and each device has its own front: accuracy vs its latency over the trials within
its budgets (:func:`device_front`).

Storage is an SQLite file by default; any Optuna RDB URL (``postgresql://...``) or a
journal file (``journal:PATH``) lets several workers on several machines share the study.
Trials run with a heartbeat: a worker killed mid-trial leaves a trial that the next
worker marks failed and re-runs. Finished trials are never redone.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from edgenas.config import SAMPLERS, SearchConfig
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import Predictor
from edgenas.progress import progress as progress_bar
from edgenas.search_spaces import Arch, BlockChoice, Space, footprint

__all__ = [
    "SAMPLERS",
    "DeviceObjective",
    "SearchConfig",
    "device_choice",
    "device_front",
    "make_storage",
    "pareto_rows",
    "run_search",
    "suggest_arch",
    "trial_figures",
    "write_results",
]


OBJECTIVES = ("latency", "ram", "flash")


@dataclass(frozen=True)
class DeviceObjective:
    """One device: its latency table, its budgets (constraints), what the search minimises for it.

    ``ram_kb`` and ``flash_kb`` bound the activation memory and the model size at the
    precision of the device's table, in kB of 1024 bytes.
    """

    name: str
    predictor: Predictor
    budget_ms: float | None = None
    objectives: tuple[str, ...] = ("latency",)
    ram_kb: float | None = None
    flash_kb: float | None = None

    def __post_init__(self) -> None:
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise ValueError(f"device {self.name!r}: objectives {bad} are not among {OBJECTIVES}")

    @property
    def precision(self) -> str:
        return self.predictor.table.header.get("precision", "fp32")

    def column(self, what: str) -> str:
        """The trial-row column holding this device's latency, RAM or flash figure."""
        return {
            "latency": f"latency_ms:{self.name}",
            "ram": f"ram_kb:{self.precision}",
            "flash": f"flash_kb:{self.precision}",
        }[what]

    @property
    def budgets(self) -> dict[str, float]:
        """Budgets set, by the row column they bound."""
        limits = {"latency": self.budget_ms, "ram": self.ram_kb, "flash": self.flash_kb}
        return {self.column(k): v for k, v in limits.items() if v is not None}

    def excess(self, row: dict[str, Any]) -> float:
        """The largest ``figure / budget - 1`` over its budgets (<= 0: all met; -1 without budgets)."""
        return max((row[c] / b - 1 for c, b in self.budgets.items()), default=-1.0)


def suggest_arch(trial: optuna.Trial, space: Space) -> Arch:
    """Sample every choice of ``space`` through ``trial``."""
    resolution = trial.suggest_categorical("resolution", list(space.resolutions))
    width = trial.suggest_categorical("width", list(space.widths))
    stages = []
    for i, stage in enumerate(space.stages):
        depth = trial.suggest_categorical(f"s{i}_depth", list(stage.depths))
        blocks = []
        for j in range(max(stage.depths)):
            k = trial.suggest_categorical(f"s{i}_b{j}_kernel", list(stage.kernels))
            e = trial.suggest_categorical(f"s{i}_b{j}_expand", list(stage.expands))
            se = trial.suggest_categorical(f"s{i}_b{j}_se", list(stage.se))
            if j < depth:
                blocks.append(BlockChoice(int(k), int(e), bool(se)))
        stages.append(tuple(blocks))
    # asked only where the space offers a choice, so that a study of a space without one keeps its parameters
    features = trial.suggest_categorical("features", list(space.feature_options)) if space.feature_choices else None
    arch = Arch(resolution=int(resolution), width=float(width), stages=tuple(stages), features=features)
    return space.validate(arch)


def make_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int = 90) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: an RDB URL (sqlite, postgresql, mysql) or ``journal:PATH``."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:") :]))
    if "://" not in url:
        raise ValueError(
            f"storage {url!r} is not a URL; use e.g. sqlite:///study.db, "
            "postgresql://user:pass@host/db or journal:/path/study.log"
        )
    # SQLite: wait for a lock held by another worker instead of failing at once.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(6):
            try:
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
                )
                if url.startswith("sqlite"):
                    _write_ahead(storage)
                return storage
            except Exception as exc:
                if not _schema_race(exc):
                    raise ValueError(f"storage {url!r}: {_storage_problem(exc)}") from None
                if attempt == 5:
                    raise
                # two workers creating the schema at once: one loses the race and tries again
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another worker creating the same tables at the same moment."""
    import sqlalchemy.exc

    if isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    return isinstance(exc, sqlalchemy.exc.OperationalError) and any(
        s in str(exc) for s in ("already exists", "database is locked")
    )


def _storage_problem(exc: Exception) -> str:
    """One line on why a storage URL cannot be opened."""
    import sqlalchemy.exc

    if isinstance(exc, ImportError):
        return (
            "its database driver is not installed (PostgreSQL: pip install 'psycopg[binary]' and a "
            "postgresql+psycopg:// URL; "
            "MySQL: pip install pymysql and a mysql+pymysql:// URL)"
        )
    if isinstance(exc, sqlalchemy.exc.ArgumentError):
        return f"not a database URL ({str(exc).splitlines()[0]}); use e.g. sqlite:///study.db or postgresql://..."
    first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return f"cannot open the database: {first}"


def population_size(config: SearchConfig) -> int:
    """NSGA-II's population: as set, or a fifth of the trial budget (8 to 50), so the budget buys >= 5 generations."""
    return config.population_size or int(min(50, max(8, config.n_trials // 5)))


def _write_ahead(storage: optuna.storages.RDBStorage) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints: every suggested parameter is a commit, and
    this made them 4x cheaper (0.18 -> 0.04 s per 42-parameter trial). Safe against a killed worker;
    several workers share the file on one machine (a network file system needs PostgreSQL anyway)."""
    import sqlalchemy

    def pragmas(connection, _record) -> None:  # SQLAlchemy's event signature
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener get the pragmas when reopened


def _sampler(
    config: SearchConfig, seed: int | None, space: Space, devices: Sequence[DeviceObjective]
) -> optuna.samplers.BaseSampler:
    if config.sampler == "guided":
        from edgenas.nas._guided import PredictorGuidedSampler, startup_trials

        @functools.cache  # the sampler asks for an arch's latency and feasibility: predict once
        def figures(arch: Arch) -> dict[str, float]:
            return trial_figures(space, arch, devices)

        return PredictorGuidedSampler(
            space,
            lambda a: {d.name: figures(a)[f"latency_ms:{d.name}"] for d in devices},
            lambda a: _feasible(figures(a), devices),
            n_startup=startup_trials(config.n_trials),
            seed=seed,
        )
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size(config), seed=seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def trial_figures(space: Space, arch: Arch, devices: Sequence[DeviceObjective]) -> dict[str, float]:
    """What a trial records besides accuracy: latency per device, size and activation memory per
    precision (KB), MACs and params (all predicted, none measured)."""
    fp = footprint(space.block_specs(arch))
    return {
        **{f"latency_ms:{d.name}": d.predictor.predict(arch) for d in devices},
        **fp.record(),
        "params": fp.params,
        "flops": fp.macs,
    }


def _excess(figures: dict[str, float], devices: Sequence[DeviceObjective]) -> float | None:
    """The trial's constraint: the smallest excess over the devices with budgets (<= 0: within all budgets
    of some device); None when no device has a budget."""
    return min((d.excess(figures) for d in devices if d.budgets), default=None)


def _feasible(figures: dict[str, float], devices: Sequence[DeviceObjective]) -> bool:
    excess = _excess(figures, devices)
    return excess is None or excess <= 0


def _objective_columns(devices: Sequence[DeviceObjective]) -> list[str]:
    """The minimised columns, in order; a figure two devices share (same precision) once."""
    out: list[str] = []
    for d in devices:
        out += [c for c in (d.column(o) for o in d.objectives) if c not in out]
    return out


def run_search(
    space: Space,
    evaluate: Callable[[Arch], float],
    devices: Sequence[DeviceObjective],
    config: SearchConfig,
    out_dir: str | os.PathLike,
    *,
    worker: int = 0,
    progress: bool = True,
) -> optuna.Study:
    """Run (or join, or resume) the study until it holds ``n_trials`` complete trials."""
    if not devices:
        raise ValueError("the search needs at least one device (a latency table)")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ValueError(f"device names must be unique, got {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = _open_study(space, devices, config, out, worker)
    remaining = config.n_trials - _complete(study)
    if remaining > 0:
        _optimize(study, _objective(study, space, evaluate, devices), remaining, config, progress)
    write_results(study, out, config.tie_pts)
    history = getattr(study.sampler, "history", None)
    if history:  # the guided sampler's accuracy predictor: its cross-validated error as trials accrue
        atomic_write_json(out / f"predictor_worker{worker}.json", {"history": history})
    return study


def _open_study(
    space: Space, devices: Sequence[DeviceObjective], config: SearchConfig, out: Path, worker: int
) -> optuna.Study:
    """The study, created or joined; refused when it was made for other objectives, space, devices or budgets."""
    url = config.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    storage = make_storage(url, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period)
    objectives = _objective_columns(devices)
    directions = ["maximize"] + ["minimize"] * len(objectives)
    for attempt in range(6):
        try:
            study = optuna.create_study(
                study_name=config.study_name,
                storage=storage,
                directions=directions,
                sampler=_sampler(config, config.seed * 1000 + worker, space, devices),
                load_if_exists=True,
            )
            break
        except optuna.exceptions.DuplicatedStudyError:  # created by another worker just now
            if attempt == 5:
                raise
            time.sleep(0.2 * (attempt + 1))
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise ValueError(f"study {config.study_name!r} in {url} has other objectives; use another study_name")
    meta = {
        "space": space.name,
        "devices": [d.name for d in devices],
        "objectives": ["accuracy", *objectives],
        "budgets": {d.name: d.budgets for d in devices},
    }
    for k, v in meta.items():
        stored = study.user_attrs.get(k)
        if stored is None:
            study.set_user_attr(k, v)
        elif stored != v:
            raise ValueError(f"study {config.study_name!r} was created with {k}={stored}, not {v}")
    if isinstance(storage, optuna.storages.RDBStorage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return study


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _objective(
    study: optuna.Study, space: Space, evaluate: Callable[[Arch], float], devices: Sequence[DeviceObjective]
) -> Callable[[optuna.Trial], list[float]]:
    """A trial: an arch sampled, its figures and budget excess recorded, its accuracy (reused when known)."""
    objectives = _objective_columns(devices)

    def objective(trial: optuna.Trial) -> list[float]:
        arch = suggest_arch(trial, space)
        trial.set_user_attr("arch", str(arch))
        figures = trial_figures(space, arch, devices)
        for key, value in figures.items():
            trial.set_user_attr(key, value)
        excess = _excess(figures, devices)
        if excess is not None:
            trial.set_constraint("budget", excess)
        # Another worker (or an earlier run) may have evaluated this arch already.
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("arch") == str(arch)
        ]
        acc = done[0].values[0] if done else evaluate(arch)
        trial.set_user_attr("accuracy", acc)
        return [acc] + [figures[c] for c in objectives]

    return objective


def _optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], list[float]],
    remaining: int,
    config: SearchConfig,
    progress: bool,
) -> None:
    """``remaining`` more trials (all workers together stop at ``n_trials`` complete ones), with edgenas's bar:
    in a log file it is one line, not a frame per trial."""
    with progress_bar(total=remaining, desc=f"search {config.study_name}", unit="trial", disable=not progress) as bar:

        def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            bar.update(1)
            if trial.state == TrialState.COMPLETE:
                bar.set_postfix(accuracy=f"{trial.user_attrs.get('accuracy', float('nan')):.4f}")

        study.optimize(
            objective,
            n_trials=remaining,
            timeout=config.timeout,
            callbacks=[optuna.study.MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,)), advance],
            catch=(),
        )


def pareto_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(all complete trials, the feasible non-dominated ones) as flat rows."""
    devices = study.user_attrs.get("devices", [])
    objectives = study.user_attrs.get("objectives", ["accuracy"])[1:]
    budgets = study.user_attrs.get("budgets", {})
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = {"trial": t.number, "arch": t.user_attrs["arch"], "accuracy": t.values[0]}
        row.update({f"latency_ms:{d}": t.user_attrs[f"latency_ms:{d}"] for d in devices})
        row.update({k: v for k, v in t.user_attrs.items() if k.startswith(("ram_kb:", "flash_kb:"))})
        for d in devices:
            row[f"within_budget:{d}"] = all(row[c] <= b for c, b in budgets.get(d, {}).items())
        row.update(
            params=t.user_attrs["params"],
            flops=t.user_attrs["flops"],
            feasible=all(c <= 0 for c in t.constraints.values()),
        )
        rows.append(row)
    # Optuna's front: the feasible trials no other feasible trial dominates (an arch sampled twice: once)
    best = {t.number for t in study.best_trials}
    front, seen = [], set()
    for r in rows:
        if r["trial"] in best and r["arch"] not in seen:
            seen.add(r["arch"])
            front.append(r)
    keys = [lambda r: -r["accuracy"]] + [lambda r, c=c: r[c] for c in objectives]
    front.sort(key=lambda r: keys[1](r) if len(keys) > 1 else -r["accuracy"])
    return rows, front


def device_front(rows: Sequence[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """One device's own front: the trials within its budgets that no other such trial beats on
    both accuracy and that device's latency, fastest first (an arch sampled twice appears once)."""
    lat = f"latency_ms:{device}"
    front, best = [], -np.inf
    for r in sorted(_within_budget(rows, device), key=lambda r: (r[lat], -r["accuracy"])):
        if r["accuracy"] > best:  # strictly: a repeat of an arch (same accuracy) is not added again
            front.append(r)
            best = r["accuracy"]
    return front


def _within_budget(rows: Sequence[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """The trials within ``device``'s budgets (rows of a study without budgets: the feasible ones)."""
    return [r for r in rows if r.get(f"within_budget:{device}", r.get("feasible", True))]


def device_choice(rows: Sequence[dict[str, Any]], device: str, tie_pts: float) -> dict[str, Any] | None:
    """The arch ``device`` gets: of the trials within its budgets whose accuracy is within
    ``tie_pts`` points of the most accurate one's, the slowest on that device (None: none fits).

    A supernet's accuracies are estimates: where two differ by a few tenths of a point, the
    larger subnet is the better bet once trained on its own (``SearchConfig.tie_pts``).
    """
    lat = f"latency_ms:{device}"
    ok = _within_budget(rows, device)
    if not ok:
        return None
    best = max(r["accuracy"] for r in ok)
    tied = [r for r in ok if r["accuracy"] >= best - tie_pts / 100 - 1e-9]  # a lead of exactly tie_pts: a tie
    return max(tied, key=lambda r: (r[lat], r["accuracy"]))


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_results(study: optuna.Study, out_dir: str | os.PathLike, tie_pts: float = 0.0) -> dict[str, Path]:
    """trials.csv, pareto.csv and pareto.json in ``out_dir`` (atomic writes); pareto.json names
    each device's choice (:func:`device_choice` with ``tie_pts``)."""
    out = Path(out_dir)
    rows, front = pareto_rows(study)
    devices = study.user_attrs.get("devices", [])
    paths = {
        "trials": atomic_write_text(out / "trials.csv", _csv(rows)),
        "pareto_csv": atomic_write_text(out / "pareto.csv", _csv(front)),
        "pareto_json": atomic_write_json(
            out / "pareto.json",
            {
                "study": study.study_name,
                "devices": study.user_attrs.get("devices"),
                "objectives": study.user_attrs.get("objectives"),
                "budgets": study.user_attrs.get("budgets"),
                "n_trials": len(rows),
                "pareto": front,
                "per_device": {d: device_front(rows, d) for d in devices},
                "tie_pts": tie_pts,
                "chosen": {d: device_choice(rows, d, tie_pts) for d in devices},
            },
        ),
    }
    return paths
