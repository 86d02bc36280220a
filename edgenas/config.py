"""The run configuration: a YAML file loaded into frozen dataclasses; unknown keys are errors.

```yaml
run_dir: runs/fmnist
space: small                 # built-in name or a YAML space file
data: {name: fashion-mnist, train_limit: 10000}
train: {epochs: 5, batch_size: 128}
search: {sampler: guided, n_trials: 100}
finalize: {distill_epochs: 3, prune: {step: 0.1, max_steps: 5, tolerance: 0.01}, qat_epochs: 2}
devices:
  - {name: cpu-fp32, lut: runs/fmnist/lut_fp32.json, budget_ms: 1.0}
  - {name: mcu, precision: int8, budget_ms: 2.0, ram_kb: 64, flash_kb: 512}   # kB of 1024 bytes
```

Every section and key is optional except ``devices`` for the search. Paths are relative to
the working directory. Command-line flags override the file; the resolved configuration is
written next to the outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgenas.data import resolve_augment
from edgenas.finalize import FinalizeConfig
from edgenas.nas import SearchConfig, TrainConfig

__all__ = ["Config", "DataConfig", "DeviceConfig", "config_to_dict", "load_config", "parse_config"]


@dataclass(frozen=True)
class DataConfig:
    """The data set, its splits and the training images' augmentation."""

    name: str = "fashion-mnist"
    root: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    train_limit: int | None = None
    # auto (chosen per data set, see edgenas.data.resolve_augment), none, or a list of crop, crop:<pad>, flip
    augment: str | tuple[str, ...] = "auto"
    image_size: int | None = None  # image folders: the side images are resized to (default: smallest found)
    workers: int = 2  # image folders: processes that decode batches
    skip_corrupt: bool = False  # image folders: leave unreadable files out (counted) instead of stopping
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 4:
            raise ValueError(f"data.image_size must be >= 4, got {self.image_size}")
        if self.workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {self.workers}")
        try:
            resolve_augment(self.augment, self.name)
        except ValueError as exc:
            raise ValueError(f"data.augment: {exc}") from None

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The augmentation ``augment`` resolves to for this data set."""
        return resolve_augment(self.augment, self.name)


DEVICE_OBJECTIVES = ("latency", "ram", "flash")


@dataclass(frozen=True)
class DeviceConfig:
    """A target: where and how to measure, its latency table, its budgets and objectives.

    ``ram_kb`` bounds the peak activation memory and ``flash_kb`` the model file, both at
    the device's precision, in kB of 1024 bytes; ``objectives`` are what the search
    minimises for this device beside maximising accuracy (none: budgets only).
    """

    name: str
    lut: str | None = None  # default: RUN_DIR/luts/<name>.json (built by `edgenas run`)
    budget_ms: float | None = None
    ram_kb: float | None = None
    flash_kb: float | None = None
    objectives: tuple[str, ...] = ("latency",)
    device: str = "local-cpu"
    precision: str = "fp32"
    threads: int = 1
    providers: tuple[str, ...] = ("cpu",)
    validate_n: int = 60

    def __post_init__(self) -> None:
        for key in ("budget_ms", "ram_kb", "flash_kb"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"devices[{self.name}].{key} must be > 0, got {value}")
        bad = [o for o in self.objectives if o not in DEVICE_OBJECTIVES]
        if bad or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(
                f"devices[{self.name}].objectives must be distinct choices of {DEVICE_OBJECTIVES}, "
                f"got {list(self.objectives)}"
            )
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"devices[{self.name}].precision must be 'fp32' or 'int8', got {self.precision!r}")
        if self.threads < 1 or self.validate_n < 8:
            raise ValueError(f"devices[{self.name}]: threads must be >= 1 and validate_n >= 8")


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/edgenas"
    space: str = "small"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finalize: FinalizeConfig = field(default_factory=FinalizeConfig)
    devices: tuple[DeviceConfig, ...] = ()

    @property
    def supernet_path(self) -> Path:
        return Path(self.run_dir) / "supernet.pt"

    @property
    def training_path(self) -> Path:
        """The supernet's training budget and per-epoch curves (JSON, for the report)."""
        return Path(self.run_dir) / "supernet_training.json"

    @property
    def search_dir(self) -> Path:
        return Path(self.run_dir) / "search"

    @property
    def finalize_dir(self) -> Path:
        return Path(self.run_dir) / "finalize"

    def lut_path(self, device: DeviceConfig) -> Path:
        return Path(device.lut) if device.lut else Path(self.run_dir) / "luts" / f"{device.name}.json"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own message
            return _coerce(value, real[0], where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {unknown} in {where or 'config'}; allowed: {names}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ValueError(f"{where or 'config'}: {exc}") from exc


def parse_config(data: dict[str, Any] | None) -> Config:
    config = _build(Config, data or {}, "")
    names = [d.name for d in config.devices]
    if len(set(names)) != len(names):
        raise ValueError(f"devices: names must be unique, got {names}")
    return config


def load_config(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Load a YAML config; ``overrides`` ({"search": {"n_trials": 10}, ...}) replace file values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level")
    for section, values in (overrides or {}).items():
        values = {k: v for k, v in values.items() if v is not None}
        if section == "":
            data.update(values)
        elif values:
            data[section] = {**(data.get(section) or {}), **values}
    try:
        return parse_config(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def config_to_dict(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["devices"] = [dict(d) for d in data["devices"]]
    return data
