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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenas.layout import RunLayout

__all__ = [
    "AUGMENTATIONS",
    "DEVICE_CHOICES",
    "SAMPLERS",
    "Config",
    "DataConfig",
    "DeviceConfig",
    "FinalizeConfig",
    "FitConfig",
    "PruneConfig",
    "Recipe",
    "SearchConfig",
    "TrainConfig",
    "check_device",
    "config_to_dict",
    "load_config",
    "parse_config",
    "resolve_augment",
]

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
AUGMENTATIONS = ("crop", "flip")
# Data sets whose classes change under a mirror image (digits): no flip for them by default.
_NO_FLIP = ("digits", "mnist5k")
SAMPLERS = ("nsga2", "tpe", "random", "guided")


# where a distillation's teacher logits come from: "online", the teacher run on every augmented
# batch the student sees; "clean", the teacher run once on every un-augmented training image
# before the first epoch and those logits reused every epoch (the teacher's forward pass is
# 40-45 % of a step with the largest subnet teaching a 0.6x-latency student on a CPU; the
# student then learns an augmented image from the logits of the image it was made from)
TEACHER_LOGITS = ("online", "clean")
# finalize.qat: "auto" finetunes the int8 model only where the device runs int8 faster than fp32
# (timed first: edgenas.finalize.QAT_MIN_SPEEDUP), "always", or "never"
QAT_CHOICES = ("auto", "always", "never")
# prune.divisor "auto": the device's channel block, at most 16: at 32 pruning would take a 72-channel layer
# to 32 or leave a 24-channel one whole; 8 where there is no table to say
AUTO_DIVISOR_MAX = 16
DIVISOR_WITHOUT_TABLE = 8


def check_teacher_logits(value: str, where: str) -> None:
    if value not in TEACHER_LOGITS:
        raise ValueError(f"{where} must be one of {TEACHER_LOGITS}; got {value!r}")


def check_device(spec: str, where: str) -> None:
    """Reject a malformed device string early (config loading); whether it is present is checked on use."""
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec):
        raise ValueError(f"{where} must be one of {DEVICE_CHOICES}; got {spec!r}")


def resolve_augment(spec: str | tuple[str, ...] | list[str], dataset: str) -> tuple[str, ...]:
    """The augmentations for ``spec``: ``auto``, ``none`` or a list of ``crop``, ``crop:PAD``, ``flip``.

    ``auto`` is ``crop`` + ``flip`` (a random crop of the image padded by side/14 pixels, a
    mirror image half the time), without ``flip`` for digit data sets (``digits``,
    ``mnist5k``), whose classes a mirror image changes. Raises ValueError naming a bad item.
    """
    if isinstance(spec, str):
        if spec == "none":
            return ()
        if spec == "auto":
            return ("crop",) if dataset in _NO_FLIP else ("crop", "flip")
        spec = (spec,)
    out = []
    for item in spec:
        name, _, arg = str(item).partition(":")
        if name not in AUGMENTATIONS or (arg and (name != "crop" or not arg.isdigit())):
            raise ValueError(
                f"unknown augmentation {item!r}; allowed: 'auto', 'none' or a list of "
                "'crop', 'crop:<pad pixels>', 'flip'"
            )
        out.append(str(item))
    return tuple(out)


@dataclass(frozen=True)
class Recipe:
    """What every training in edgenas shares: the batch, SGD with Nesterov momentum, the
    loss's label smoothing and distillation temperature, the seed, a step cap for quick runs.

    :class:`FitConfig` (one model), :class:`TrainConfig` (the supernet) and
    :class:`FinalizeConfig` (finalize's finetunes) are recipes with their own schedule.
    """

    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    temperature: float = 4.0
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs

    def _check_recipe(self, where: str) -> None:
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"{where} needs batch_size >= 1 and lr > 0; got {self.batch_size}, {self.lr}")
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0:
            raise ValueError(
                f"{where} needs momentum in [0, 1) and weight_decay >= 0; got {self.momentum}, {self.weight_decay}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"{where} needs label_smoothing in [0, 1), got {self.label_smoothing}")
        if self.temperature <= 0:
            raise ValueError(f"{where}.temperature must be > 0, got {self.temperature}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"{where}.max_steps_per_epoch must be >= 1 or null, got {self.max_steps_per_epoch}")


@dataclass(frozen=True)
class FitConfig(Recipe):
    """A finetune (or a stand-alone training when there is no teacher)."""

    epochs: int = 5
    lr: float = 0.05
    alpha_start: float = 0.7
    alpha_end: float = 0.3
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    augment: tuple[str, ...] = ()  # see edgenas.data.resolve_augment
    teacher_logits: str = "online"  # see TEACHER_LOGITS

    def __post_init__(self) -> None:
        self._check_recipe("fit")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"fit needs epochs >= 0, batch_size >= 1, lr > 0: {self}")
        if not 0.0 <= self.label_smoothing < 1.0 or self.warmup_epochs < 0:
            raise ValueError(f"fit needs label_smoothing in [0, 1) and warmup_epochs >= 0: {self}")
        check_teacher_logits(self.teacher_logits, "fit.teacher_logits")


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """Supernet training: the sandwich rule, its optimiser and schedule, where it runs."""

    epochs: int = 10
    lr: float = 0.1
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    label_smoothing: float = 0.1  # on the largest subnet's cross-entropy (and the students' CE part)
    n_random: int = 2
    alpha: float = 0.7
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps
    threads: int = 0  # 0: every core
    # a supernet checkpoint whose weights start the training (the next phase of progressive
    # shrinking: a supernet trained without a choice goes on training with it); see nas._train
    init_from: str | None = None

    def __post_init__(self) -> None:
        self._check_recipe("train")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise ValueError(f"train.init_from must be a checkpoint path or null, got {self.init_from!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError(f"train needs epochs >= 1, batch_size >= 2, lr > 0; got {self}")
        check_device(self.device, "train.device")
        if not 0.0 <= self.label_smoothing < 1.0 or self.warmup_epochs < 0:
            raise ValueError(
                f"train needs label_smoothing in [0, 1) and warmup_epochs >= 0; got "
                f"{self.label_smoothing}, {self.warmup_epochs}"
            )
        if self.n_random < 0:
            raise ValueError(f"train.n_random must be >= 0, got {self.n_random}")
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError(f"train needs temperature > 0 and alpha in [0, 1]; got {self}")


@dataclass(frozen=True)
class SearchConfig:
    """The search: its sampler and budget of trials, its storage, how a subnet is evaluated."""

    sampler: str = "guided"  # bench/strategies.py: +12 % hypervolume over random at equal time; NSGA-II +4 %
    n_trials: int = 100
    timeout: float | None = None
    storage: str | None = None  # None: sqlite file study.db in the output folder
    study_name: str = "edgenas"
    seed: int = 0
    population_size: int | None = None  # NSGA-II's; None: a fifth of n_trials, 8 to 50 (at least 5 generations)
    # an evaluated subnet: BN statistics re-estimated on this many training batches, accuracy on
    # the first this many validation images (None: all). bench/ranking.py chose 4 x 2,000: the
    # ranking of 8 x 3,000 (Kendall tau with stand-alone training within noise) at half the cost
    calib_batches: int = 4
    val_images: int | None = 2000
    device: str = "auto"  # where torch evaluates subnets: auto, cpu, cuda, cuda:N, mps
    # the arch each device gets: of the trials within its budgets whose accuracy is within this
    # many points of the most accurate one's, the slowest (the most capacity the budget allows).
    # bench/ranking.py --ties-of ...: where two subnets' supernet accuracies differ by under
    # 0.3 pt, the supernet orders their stand-alone validation accuracies little better than a
    # coin (27 of 47 pairs), the slower subnet wins 35 of 47; 0: the most accurate, however slight its lead
    tie_pts: float = 0.3
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats (RDB storages)
    grace_period: int = 90  # a running trial without a heartbeat for this long is failed and retried

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"search.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.n_trials < 1:
            raise ValueError(f"search.n_trials must be >= 1, got {self.n_trials}")
        if self.calib_batches < 1:
            raise ValueError(f"search.calib_batches must be >= 1, got {self.calib_batches}")
        if self.val_images is not None and self.val_images < 1:
            raise ValueError(f"search.val_images must be >= 1 or null (all), got {self.val_images}")
        if not 0.0 <= self.tie_pts < 100.0:
            raise ValueError(f"search.tie_pts must be in [0, 100) accuracy points, got {self.tie_pts}")
        if self.population_size is not None and self.population_size < 2:
            raise ValueError(f"search.population_size must be >= 2, got {self.population_size}")
        check_device(self.device, "search.device")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"search.timeout must be > 0 seconds, got {self.timeout}")


@dataclass(frozen=True)
class PruneConfig:
    """Progressive structured pruning: step size, how far, channel rounding, when to stop."""

    step: float = 0.1  # share of the original channels removed per step
    max_steps: int = 5
    # channel counts kept at multiples of this; "auto": the channel block the device's latency table
    # found its runtime computing in (Predictor.channel_pricing: 16 for ONNX Runtime on AVX-512, 8 on
    # AVX2), at most AUTO_DIVISOR_MAX; 8 without a table
    divisor: int | str = "auto"
    tolerance: float = 0.01  # stop when accuracy falls more than this below the start
    latency_target_ms: float | None = None  # stop once the measured latency is at or below
    # stop once the predicted activation memory / model size (kB of 1024 bytes, at the device's
    # precision) is at or below; with several targets, once all of them are met
    ram_target_kb: float | None = None
    flash_target_kb: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 0.5:
            raise ValueError(f"prune.step must be in (0, 0.5], got {self.step}")
        if self.max_steps < 0 or self.step * self.max_steps >= 1.0:
            raise ValueError(f"prune.max_steps must be >= 0 with step * max_steps < 1, got {self.max_steps}")
        if self.divisor != "auto" and not (isinstance(self.divisor, int) and self.divisor >= 1):
            raise ValueError(f"prune.divisor must be an integer >= 1 or 'auto', got {self.divisor!r}")
        if self.tolerance < 0:
            raise ValueError(f"prune.tolerance must be >= 0, got {self.tolerance}")
        for key in ("latency_target_ms", "ram_target_kb", "flash_target_kb"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"prune.{key} must be > 0, got {value}")

    def resolved(self, block: int | None) -> PruneConfig:
        """This config with an "auto" divisor replaced by ``block``, the device's channel block (None: no
        table), capped at AUTO_DIVISOR_MAX."""
        if self.divisor != "auto":
            return self
        return dataclasses.replace(self, divisor=min(block or DIVISOR_WITHOUT_TABLE, AUTO_DIVISOR_MAX))

    @property
    def targets(self) -> dict[str, float]:
        """The targets set, by the figure they bound (``latency_ms``, ``ram_kb``, ``flash_kb``)."""
        limits = {"latency_ms": self.latency_target_ms, "ram_kb": self.ram_target_kb, "flash_kb": self.flash_target_kb}
        return {k: v for k, v in limits.items() if v is not None}

    def met(self, step: Any) -> bool:
        """Whether ``step`` (a :class:`~edgenas.pruning.PruneStep`) meets every target set.

        False without targets: prune to the end.
        """
        figures = dataclasses.asdict(step)
        return bool(self.targets) and all(figures[k] is not None and figures[k] <= v for k, v in self.targets.items())


@dataclass(frozen=True)
class FinalizeConfig(Recipe):
    """Finalize's finetunes (distillation, pruning, QAT), its teacher, exports and measurements."""

    # the distillation finetune: a warm-up then cosine schedule of this many epochs; the epoch
    # with the best validation accuracy is kept and the whole curve goes into the model card
    distill_epochs: int = 3
    lr: float = 0.01
    warmup_epochs: float = 0.0
    alpha_start: float = 0.7
    alpha_end: float = 0.3
    prune: PruneConfig = field(default_factory=PruneConfig)
    prune_finetune_epochs: int = 1
    # the pruning finetunes' peak rate: they repair a trained model, which the distillation's rate would
    # throw out of its minimum (Fashion-MNIST, a 5 % step: 93.47 % validation at 0.005, 93.03 % at 0.05)
    prune_lr: float = 0.005
    qat: str = "auto"  # see QAT_CHOICES
    qat_epochs: int = 2
    qat_lr: float = 0.0005  # about 1 % of the training rate: QAT only nudges a trained model
    # QAT distils from the model's own fp32 weights (the pruned model), which the int8 model
    # should reproduce, not from the teacher, which the pruned model may already have passed
    qat_alpha: float = 0.7
    # a user teacher instead of the largest subnet: a TorchScript file or a pickled nn.Module
    # taking the data's (N, C, H, W) normalised images and returning class logits; an ONNX file
    # (run by ONNX Runtime; one exported by edgenas brings its own normalisation); or a list of
    # ONNX files, an ensemble teaching with the mean of their logits
    teacher: str | tuple[str, ...] | None = None
    teacher_resolution: int | None = None  # its input size; default: an ONNX file's own, else the finalized arch's
    # without a user teacher: train the largest subnet further, alone, for this many epochs (the
    # best on validation kept); it teaches only if it measures better on validation than the
    # largest subnet with the supernet's weights
    teacher_epochs: int = 0
    teacher_lr: float = 0.02
    # the distillation finetune's teacher logits (see TEACHER_LOGITS): "clean" (the same accuracy
    # as "online" in half the time, measured on Fashion-MNIST) or "online"
    teacher_logits: str = "clean"
    label_smoothing: float = 0.1  # on the cross-entropy part of every finetune
    calib_batches: int = 8
    measure_rounds: int = 20
    # an export that fails its check against torch is not deployed and finalize fails; true:
    # deploy the faster precision anyway (the card still records the failed check)
    accept_failed_checks: bool = False
    device: str = "auto"  # where torch finetunes and evaluates: auto, cpu, cuda, cuda:N, mps

    def __post_init__(self) -> None:
        self._check_recipe("finalize")
        for name in ("distill_epochs", "prune_finetune_epochs", "qat_epochs", "teacher_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"finalize.{name} must be >= 0, got {getattr(self, name)}")
        if min(self.lr, self.prune_lr, self.qat_lr, self.teacher_lr) <= 0:
            raise ValueError(
                f"finalize.lr, prune_lr, qat_lr and teacher_lr must be > 0, got {self.lr}, {self.prune_lr}, "
                f"{self.qat_lr}, {self.teacher_lr}"
            )
        if self.warmup_epochs < 0:
            raise ValueError(f"finalize.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        check_device(self.device, "finalize.device")
        check_teacher_logits(self.teacher_logits, "finalize.teacher_logits")
        if self.qat not in QAT_CHOICES:
            raise ValueError(f"finalize.qat must be one of {QAT_CHOICES}; got {self.qat!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"finalize.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.teacher_resolution is not None and self.teacher_resolution < 1:
            raise ValueError(f"finalize.teacher_resolution must be >= 1, got {self.teacher_resolution}")
        for name in ("alpha_start", "alpha_end", "qat_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"finalize.{name} must be in [0, 1], got {getattr(self, name)}")


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
    minimises for this device beside maximising accuracy (none: budgets only). A latency
    budget is ``budget_ms``, or ``budget_of`` a model on this device: a MobileNetV3 layout
    of the space (``mbv3-small-0.75``, ...) or an arch string, whose predicted latency times
    ``budget_scale`` is the budget (the same config then means the same thing on any machine).
    """

    name: str
    lut: str | None = None  # default: RUN_DIR/luts/<name>.json (built by `edgenas run`)
    budget_ms: float | None = None
    budget_of: str | None = None
    budget_scale: float = 1.0
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
        if self.budget_ms is not None and self.budget_of is not None:
            raise ValueError(f"devices[{self.name}]: give budget_ms or budget_of, not both")
        if self.budget_scale <= 0:
            raise ValueError(f"devices[{self.name}].budget_scale must be > 0, got {self.budget_scale}")
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
    def layout(self) -> RunLayout:
        """Where this run keeps each artifact (the tables the config names itself included)."""
        return RunLayout(Path(self.run_dir), {d.name: d.lut for d in self.devices})


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
    import yaml  # here, not at the top: the device side reads configs' constants without PyYAML

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
