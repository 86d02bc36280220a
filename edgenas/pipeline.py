"""The stages as functions of a :class:`~edgenas.config.Config`: the Python API behind the CLI.

    from edgenas.config import load_config
    from edgenas import pipeline

    config = load_config("edgenas.yaml")
    supernet, history = pipeline.train(config)
    study = pipeline.search(config)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import yaml

from edgenas.config import Config, config_to_dict
from edgenas.data import Splits, load_dataset, make_splits
from edgenas.io import atomic_write_text, read_json
from edgenas.latency_tables import LatencyTable, Predictor, make_backend
from edgenas.nas import DeviceObjective, SubnetEvaluator, load_supernet, run_search, set_threads, train_supernet
from edgenas.search_spaces import SPACES, Space, Supernet

__all__ = [
    "choose_arch",
    "devices",
    "finalize",
    "load_space",
    "search",
    "space_for",
    "splits_for",
    "train",
    "write_resolved_config",
]


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
        load_dataset(d.name, root=d.root),
        val_fraction=d.val_fraction, test_fraction=d.test_fraction, seed=d.seed, train_limit=d.train_limit,
    )  # fmt: skip


def space_for(config: Config, splits: Splits) -> Space:
    """The configured space with as many classes as the data has."""
    space = load_space(config.space)
    return dataclasses.replace(space, num_classes=splits.num_classes)


def write_resolved_config(config: Config, name: str = "config.resolved.yaml") -> Path:
    return atomic_write_text(Path(config.run_dir) / name, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def train(config: Config, *, progress: bool = True) -> tuple[Supernet, list[dict]]:
    """Train (or resume) the supernet; the checkpoint is ``run_dir/supernet.pt``."""
    splits = splits_for(config)
    write_resolved_config(config)
    return train_supernet(space_for(config, splits), splits, config.train, config.supernet_path, progress=progress)


def devices(config: Config, space: Space) -> list[DeviceObjective]:
    if not config.devices:
        raise ValueError("the config has no devices: add e.g. devices: [{name: cpu, lut: lut.json, budget_ms: 2.0}]")
    out = []
    for d in config.devices:
        table = LatencyTable.load(d.lut)
        if table.calibration is None:
            raise ValueError(f"latency table {d.lut!r} has no calibration yet; run: edgenas lut validate {d.lut}")
        predictor = Predictor(table, space)
        smallest = predictor.predict(space.smallest())
        if d.budget_ms is not None and d.budget_ms < smallest:
            raise ValueError(f"devices[{d.name}].budget_ms={d.budget_ms} is below the smallest subnet's predicted "
                             f"latency ({smallest:.3f} ms): no arch can meet it")  # fmt: skip
        out.append(DeviceObjective(d.name, predictor, d.budget_ms, d.objective))
    return out


def search(config: Config, *, worker: int = 0, progress: bool = True) -> optuna.Study:
    """Run, join or resume the search; results in ``run_dir/search``."""
    splits = splits_for(config)
    space = space_for(config, splits)
    devs = devices(config, space)
    set_threads(config.train.threads)
    supernet = load_supernet(space, config.supernet_path)
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=config.search.calib_batches, seed=config.search.seed)
    write_resolved_config(config)
    return run_search(space, evaluator, devs, config.search, config.search_dir, worker=worker, progress=progress)


def choose_arch(config: Config, device: str) -> str:
    """The most accurate arch of the search's Pareto set that meets ``device``'s budget."""
    path = config.search_dir / "pareto.json"
    if not path.exists():
        raise FileNotFoundError(f"no search results at {str(path)!r}; run 'edgenas search' first or pass --arch")
    front = read_json(path, "Pareto set")["pareto"]
    budget = next(d.budget_ms for d in config.devices if d.name == device)
    ok = [r for r in front if budget is None or r[f"latency_ms:{device}"] <= budget]
    if not ok:
        raise ValueError(f"no arch on the Pareto front meets device {device!r}'s budget of {budget} ms")
    return max(ok, key=lambda r: r["accuracy"])["arch"]


def finalize(
    config: Config, *, archs: dict[str, str] | None = None, progress: bool = True
) -> dict[str, dict]:
    """Finalize one arch per device (``archs``: device -> arch string; default: chosen by budget).

    Returns the model card per device; outputs in ``run_dir/finalize/<device>/``.
    """
    from edgenas.finalize import finalize_arch

    splits = splits_for(config)
    space = space_for(config, splits)
    set_threads(config.train.threads)
    supernet = load_supernet(space, config.supernet_path)
    cards = {}
    for d in devices(config, space):
        text = (archs or {}).get(d.name) or choose_arch(config, d.name)
        try:
            arch = space.parse(text)
        except ValueError as exc:
            raise ValueError(f"finalize arch for device {d.name!r}: {exc}") from exc
        h = d.predictor.table.header
        backend = make_backend(h["device"], threads=h["threads"], providers=h["providers"])
        cards[d.name] = finalize_arch(
            arch, space=space, supernet=supernet, splits=splits, backend=backend,
            out_dir=config.finalize_dir / d.name, config=config.finalize, predictor=d.predictor, device=d.name,
            progress=progress,
        )  # fmt: skip
    return cards
