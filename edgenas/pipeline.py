"""The stages as functions of a :class:`~edgenas.config.Config`: the Python API behind the CLI.

from edgenas.config import load_config
from edgenas import pipeline

config = load_config("edgenas.yaml")
supernet, history = pipeline.train(config)
study = pipeline.search(config)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from edgenas.accelerator import Accelerator
from edgenas.config import Config, DeviceConfig, config_to_dict
from edgenas.data import Splits, load_dataset, make_splits
from edgenas.io import atomic_write_json, atomic_write_text, file_digest, json_digest, read_json
from edgenas.latency_tables import LatencyTable, Predictor, TableMismatchError, expected_providers, make_backend
from edgenas.layout import STAGES, Front
from edgenas.nas import (
    DeviceObjective,
    SubnetEvaluator,
    load_supernet,
    run_search,
    torch_threads,
    train_supernet,
    trial_figures,
)
from edgenas.search_spaces import SPACES, Space, Supernet, reference_archs

__all__ = [
    "STAGES",
    "build_luts",
    "choose_arch",
    "devices",
    "finalize",
    "load_space",
    "run",
    "search",
    "space_for",
    "splits_for",
    "train",
    "write_resolved_config",
]

logger = logging.getLogger(__name__)


def load_space(name_or_path: str) -> Space:
    """A built-in space by name, or a space defined in a YAML file."""
    if name_or_path in SPACES:
        return SPACES[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"space file {name_or_path!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"space file {name_or_path!r} is not valid YAML: {exc}") from exc
        try:
            return Space.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"space file {name_or_path!r}: {exc}") from exc
    raise ValueError(f"unknown space {name_or_path!r}; built-in spaces: {sorted(SPACES)}, or a YAML file path")


def splits_for(config: Config) -> Splits:
    d = config.data
    return make_splits(
        load_dataset(d.name, root=d.root, size=d.image_size, skip_corrupt=d.skip_corrupt, workers=d.workers),
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
        train_limit=d.train_limit,
    )


def data_record(config: Config) -> dict[str, Any]:
    """The data set and split settings finalize writes into every exported model (``edgenas predict``
    rebuilds the test split from them)."""
    return {k: getattr(config.data, k) for k in ("name", "root", "image_size", "seed", "val_fraction", "test_fraction")}


def space_for(config: Config, splits: Splits) -> Space:
    """The configured space with as many classes as the data has."""
    space = load_space(config.space)
    return dataclasses.replace(space, num_classes=splits.num_classes)


def write_resolved_config(config: Config, name: str = "config.resolved.yaml") -> Path:
    path = config.layout.resolved_config.with_name(name)
    return atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def train(config: Config, *, progress: bool = True) -> tuple[Supernet, list[dict]]:
    """Train (or resume) the supernet; the checkpoint is ``run_dir/supernet.pt``."""
    splits = splits_for(config)
    write_resolved_config(config)
    if progress:
        logger.info(
            f"[edgenas] train: augmentation {list(config.data.augmentations) or 'none'} "
            f"(data.augment: {config.data.augment})"
        )
    supernet, history = train_supernet(
        space_for(config, splits),
        splits,
        config.train,
        config.layout.supernet,
        augment=config.data.augmentations,
        progress=progress,
    )
    budget = {
        "epochs": len(history),
        "train_images": len(splits.train.labels),
        "val_images": len(splits.val.labels),
        "train_limit": config.data.train_limit,
        "augment": list(config.data.augmentations),
    }
    atomic_write_json(config.layout.training, {"budget": budget, "history": history})
    return supernet, history


def devices(config: Config, space: Space) -> list[DeviceObjective]:
    if not config.devices:
        raise ValueError("the config has no devices: add e.g. devices: [{name: cpu, lut: lut.json, budget_ms: 2.0}]")
    out = []
    for d in config.devices:
        lut = config.layout.lut(d.name)
        table = LatencyTable.load(lut)
        # a table measured some other way (device, precision, threads, providers, space) would
        # steer the search with another device's costs
        providers = expected_providers(d.device, d.providers)
        table.check(
            {
                "device": d.device,
                "precision": d.precision,
                "threads": d.threads,
                "providers": providers,
                "space": space.name,
            },
            f"devices[{d.name}].lut {str(lut)!r}",
        )
        if table.calibration is None:
            raise ValueError(f"latency table {str(lut)!r} has no calibration yet; run: edgenas lut validate {lut}")
        predictor = Predictor(table, space)
        budget = _latency_budget(d, space, predictor)
        device = DeviceObjective(d.name, predictor, budget, d.objectives, d.ram_kb, d.flash_kb)
        _check_budgets(device, space)
        out.append(device)
    return out


def _latency_budget(d: DeviceConfig, space: Space, predictor: Predictor) -> float | None:
    """``budget_ms``, or ``budget_scale`` x the predicted latency on this device of the model ``budget_of`` names."""
    if d.budget_of is None:
        return d.budget_ms
    refs = reference_archs(space)
    if d.budget_of in refs:
        arch = refs[d.budget_of]
    else:
        try:
            arch = space.parse(d.budget_of)
        except ValueError as exc:
            raise ValueError(
                f"devices[{d.name}].budget_of={d.budget_of!r} is neither a MobileNetV3 layout of the space "
                f"({', '.join(refs)}) nor an arch of it: {exc}"
            ) from None
    return d.budget_scale * predictor.predict(arch)


def _check_budgets(device: DeviceObjective, space: Space) -> None:
    """One line naming a budget no arch of the space can meet: the smallest arch's figure beside it."""
    smallest = space.smallest()
    figures = trial_figures(space, smallest, [device])
    what = {
        "latency_ms": ("budget_ms", "predicted latency", "ms"),
        "ram_kb": ("ram_kb", "activation memory", "kB"),
        "flash_kb": ("flash_kb", "model size", "kB"),
    }
    for column, limit in device.budgets.items():
        if figures[column] > limit:
            key, name, unit = what[column.split(":")[0]]
            raise ValueError(
                f"devices[{device.name}].{key}={limit:g} is below the smallest subnet's {name} at "
                f"{device.precision} ({figures[column]:.3f} {unit}, {smallest}): no arch can meet it"
            )


def search(config: Config, *, worker: int = 0, progress: bool = True) -> optuna.Study:
    """Run, join or resume the search; results in ``run_dir/search``."""
    splits = splits_for(config)
    space = space_for(config, splits)
    devs = devices(config, space)
    with torch_threads(config.train.threads):
        supernet = load_supernet(space, config.layout.supernet)
        evaluator = SubnetEvaluator(
            supernet,
            splits,
            calib_batches=config.search.calib_batches,
            images=config.search.val_images,
            seed=config.search.seed,
            accel=Accelerator.create(config.search.device),
        )
        write_resolved_config(config)
        study = run_search(
            space, evaluator, devs, config.search, config.layout.search, worker=worker, progress=progress
        )
        # the MobileNetV3 layouts, scored the same way, for the report's front
        refs = [
            {
                "name": name,
                "arch": str(arch),
                "accuracy": evaluator(arch),
                **{f"latency_ms:{d.name}": d.predictor.predict(arch) for d in devs},
            }
            for name, arch in reference_archs(space).items()
        ]
        atomic_write_text(config.layout.references, json.dumps(refs, indent=1))
        return study


def choose_arch(config: Config, device: str) -> str:
    """The arch the search chose for ``device``: within its budgets, the slowest of those within
    ``search.tie_pts`` of the most accurate (:func:`edgenas.nas.device_choice`)."""
    path = config.layout.front
    if not path.exists():
        raise FileNotFoundError(f"no search results at {str(path)!r}; run 'edgenas search' first or pass --arch")
    front = Front.load(path)
    best = front.best(device)
    if best is None:
        raise ValueError(f"no searched arch meets device {device!r}'s budgets {front.budgets(device)}")
    return best["arch"]


def finalize(config: Config, *, archs: dict[str, str] | None = None, progress: bool = True) -> dict[str, dict]:
    """Finalize one arch per device (``archs``: device -> arch string; default: chosen by budget).

    Returns the model card per device; outputs in ``run_dir/finalize/<device>/``.
    """
    from edgenas.finalize import finalize_arch

    splits = splits_for(config)
    space = space_for(config, splits)
    with torch_threads(config.train.threads):
        supernet = load_supernet(space, config.layout.supernet)
        cards = {}
        for d in devices(config, space):
            text = (archs or {}).get(d.name) or choose_arch(config, d.name)
            try:
                arch = space.parse(text)
            except ValueError as exc:
                raise ValueError(f"finalize arch for device {d.name!r}: {exc}") from exc
            h = d.predictor.table.header
            backend = make_backend(h["device"], threads=h["threads"], providers=h["providers"])
            # finalize compares its measurements with the table's predictions: the same machine and runtime
            d.predictor.table.check_device(
                backend.fingerprint(), f"devices[{d.name}].lut vs the device finalize measures on"
            )
            cards[d.name] = finalize_arch(
                arch,
                space=space,
                supernet=supernet,
                splits=splits,
                backend=backend,
                out_dir=config.layout.finalize(d.name),
                config=config.finalize,
                predictor=d.predictor,
                device=d.name,
                augment=config.data.augmentations,
                progress=progress,
                data=data_record(config),
            )
        return cards


# ------------------------------------------------------------------------------------------ run


def _stage_inputs(config: Config) -> dict[str, str]:
    """Each stage's input hash: its own settings plus the hashes of the stages it reads.

    Where torch runs (``device``), how many threads it uses and how many processes decode
    images change how fast a stage runs, not what it computes: they are no stage's input.
    """
    c = config_to_dict(config)
    for section in ("train", "search", "finalize"):
        for key in ("device", "threads"):
            c[section].pop(key, None)
    c["data"].pop("workers")
    # more trials or more time extend the study: the search's input is what it searches, and
    # finalize's includes the trial count (more trials can choose another arch)
    init = c["train"].pop("init_from", None)
    if init is not None:  # the starting weights' content, not only their path
        c["train"]["init_from"] = file_digest(init) if Path(init).is_file() else init
    n_trials = c["search"].pop("n_trials")
    c["search"].pop("timeout", None)
    space = load_space(config.space).to_dict()
    # a table depends on how a device is measured, not on its budget (the search's input)
    goals = ("budget_ms", "budget_of", "budget_scale", "ram_kb", "flash_kb", "objectives")
    measure = [{k: v for k, v in d.items() if k not in goals} for d in c["devices"]]
    budgets = [{k: d.get(k) for k in ("name", *goals)} for d in c["devices"]]
    h = {"lut": json_digest([space, measure, c["data"]["name"], c["data"].get("root")])}
    h["train"] = json_digest([space, c["data"], c["train"]])
    h["search"] = json_digest([h["lut"], h["train"], c["search"], budgets])
    h["finalize"] = json_digest([h["search"], n_trials, c["finalize"]])
    h["report"] = json_digest([h["finalize"]])
    return h


def _search_outputs(study: optuna.Study) -> dict[str, int]:
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    return {"trials": len(study.trials), "complete_trials": complete}


def _unfinished(config: Config, stage: str) -> bool:
    """A finished stage with work left to do: a search with fewer complete trials than ``n_trials``."""
    if stage != "search":
        return False
    outputs = read_json(config.layout.manifest(stage), "manifest").get("outputs", {})
    return outputs.get("complete_trials", outputs.get("trials", 0)) < config.search.n_trials


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    import edgenas

    return {
        "edgenas": edgenas.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "optuna": optuna.__version__,
    }


def _force(config: Config, stage: str) -> None:
    """Remove a stage's outputs so that it runs again from scratch."""
    layout = config.layout
    if stage == "lut":
        for d in config.devices:
            if layout.owns_lut(d.name):  # never a table the user named
                layout.lut(d.name).unlink(missing_ok=True)
    elif stage == "train":
        config.layout.supernet.unlink(missing_ok=True)
        config.layout.training.unlink(missing_ok=True)
    elif stage == "search":
        shutil.rmtree(config.layout.search, ignore_errors=True)
    elif stage == "finalize":
        shutil.rmtree(config.layout.finalize_root, ignore_errors=True)
    elif stage == "report":
        shutil.rmtree(layout.report, ignore_errors=True)


def build_luts(config: Config, *, progress: bool = True) -> dict[str, Path]:
    """Build (or resume) and validate every device's latency table."""
    from edgenas.latency_tables import build_table, validate_table

    space = space_for(config, splits_for(config))  # the classifier's width: the data's classes
    out = {}
    for d in config.devices:
        path = config.layout.lut(d.name)
        backend = make_backend(d.device, threads=d.threads, providers=d.providers)
        try:
            build_table(space, backend, path, device=d.device, precision=d.precision, progress=progress)
        except TableMismatchError:
            if not config.layout.owns_lut(d.name):  # the user's table: never deleted
                raise
            # the run's own table, measured some other way (device, precision, threads, ...):
            # measure this device again; the other devices' tables are kept
            path.unlink()
            config.layout.lut_validation(d.name).unlink(missing_ok=True)
            build_table(space, backend, path, device=d.device, precision=d.precision, progress=progress)
        if LatencyTable.load(path).calibration is None:
            report = validate_table(path, backend, n=d.validate_n, progress=progress)
            atomic_write_text(config.layout.lut_validation(d.name), json.dumps(report, indent=1))
        out[d.name] = path
    return out


def run(config: Config, *, from_stage: str | None = None, progress: bool = True) -> dict[str, dict]:
    """Every stage into ``run_dir``; a stage whose inputs are unchanged since it finished is skipped.

    ``from_stage`` forces that stage and every later one. A killed run resumes: each stage
    resumes its own work (table entries, training epochs, trials, finalize steps).
    """
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages: {STAGES}")
    if not config.devices:
        raise ValueError("the config has no devices: add e.g. devices: [{name: cpu, budget_ms: 2.0}]")
    write_resolved_config(config)
    hashes = _stage_inputs(config)
    forced = set(STAGES[STAGES.index(from_stage) :]) if from_stage else set()
    actions = {
        "lut": lambda: {k: str(v) for k, v in build_luts(config, progress=progress).items()},
        "train": lambda: {"history": train(config, progress=progress)[1]},
        "search": lambda: _search_outputs(search(config, progress=progress)),
        "finalize": lambda: {k: v["chosen_model"] for k, v in finalize(config, progress=progress).items()},
        "report": lambda: {"html": str(_report(config))},
    }
    done: dict[str, dict] = {}
    for stage in STAGES:
        upstream_ran = any(not v.get("skipped") for v in done.values())  # e.g. a search extended
        if _skip_or_reset(config, stage, hashes[stage], forced=stage in forced, upstream_ran=upstream_ran):
            done[stage] = {"skipped": True}
            if progress:
                logger.info(f"[edgenas] {stage}: up to date, skipped")
            continue
        if progress:
            logger.info(f"[edgenas] {stage}: running")
        done[stage] = _run_stage(config, stage, hashes[stage], actions[stage])
    return done


def _previous_hash(config: Config, stage: str) -> str | None:
    """The input hash the stage last finished with, or began with and has not finished."""
    path, marker = config.layout.manifest(stage), config.layout.started(stage)
    previous = read_json(path, "manifest").get("input_hash") if path.exists() else None
    if previous is None and marker.exists():
        previous = marker.read_text().strip()
    return previous


def _skip_or_reset(config: Config, stage: str, input_hash: str, *, forced: bool, upstream_ran: bool) -> bool:
    """Whether ``stage`` can be skipped; else its outputs are cleared where they cannot be resumed.

    A stage whose inputs are unchanged still runs when an earlier stage ran (a search
    extended: finalize may choose again), resuming its own work.
    """
    path = config.layout.manifest(stage)
    previous = _previous_hash(config, stage)
    if previous == input_hash and path.exists() and not (forced or upstream_ran or _unfinished(config, stage)):
        return True
    changed = previous is not None and previous != input_hash
    if forced or (changed and stage not in ("lut", "finalize")):
        # outputs made with other inputs (or a forced re-run): start the stage over; an
        # unfinished stage with the same inputs resumes instead. Tables check their own
        # header, so the lut stage re-measures only the devices whose measurement changed;
        # finalize steps check their own record, so only the steps whose inputs changed run.
        _force(config, stage)
        path.unlink(missing_ok=True)
    return False


def _run_stage(config: Config, stage: str, input_hash: str, action: Callable[[], dict]) -> dict[str, Any]:
    """Run ``stage``; its manifest (inputs, versions, compute, outputs) written when it finishes."""
    marker = config.layout.started(stage)
    atomic_write_text(marker, input_hash)
    started = time.time()
    outputs = action()
    manifest = {
        "stage": stage,
        "input_hash": input_hash,
        "config": config_to_dict(config),
        "versions": _versions(),
        "device_fingerprints": _fingerprints(config),
        "compute": _compute(config, stage),
        "seed": config.train.seed,
        "started": started,
        "finished": time.time(),
        "seconds": time.time() - started,
        "outputs": outputs,
    }
    atomic_write_text(config.layout.manifest(stage), json.dumps(manifest, indent=1, default=str))
    marker.unlink(missing_ok=True)
    return manifest


def _compute(config: Config, stage: str) -> dict[str, Any] | None:
    """Where torch ran a stage (device, its name, layout, precision), for the manifest."""
    device = {"train": config.train.device, "search": config.search.device, "finalize": config.finalize.device}.get(
        stage
    )
    return Accelerator.create(device).describe() if device else None


def _fingerprints(config: Config) -> dict[str, Any]:
    out = {}
    for d in config.devices:
        path = config.layout.lut(d.name)
        if path.exists():
            out[d.name] = LatencyTable.load(path).header.get("fingerprint")
    return out


def _report(config: Config) -> Path:
    from edgenas.reports import write_report

    return write_report(config.run_dir)
