"""Finalize: from a searched arch to a verified device model, each step saved and resumable.

For one arch: extract it with its supernet weights (BN recalibrated) -> finetune with
knowledge distillation from the teacher (the largest subnet by default), alpha decaying ->
progressive structured pruning with a short distillation finetune after each step ->
quantization-aware finetuning, distilled from the pruned model's own fp32 outputs (by
default only where the device times the pruned model's int8 faster than its fp32) ->
export fp32, QAT int8 and PTQ int8 (ONNX Runtime static quantization, the comparison) ->
check every export against torch -> time every stage's model end to end on the device in
one interleaved batch, measure its session's peak memory and its test accuracy -> pick
the faster precision for the device -> write a model card (JSON and Markdown) with the
stage table.

:func:`finalize_arch` reads as these steps: ``_extract``, ``_distill``, ``_prune``, ``_qat``
(the model steps, ``_MODEL_STEPS``), then ``_export``, ``_check``, ``_measure`` and
``_card``; each is a function of one ``_Run`` state, so another runtime's export is one
more function. Every model step writes its model to the output folder before the next starts, with a
``<step>.json`` beside it that records what made it (the arch, the settings the step
uses, the data, digests of the supernet and teacher weights, and the previous step's
record). A killed run starts again at the first step whose file is missing or was made by
other inputs: a step is never reused for another arch or other settings.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgenas.accelerator import Accelerator, seeded
from edgenas.config import FinalizeConfig, FitConfig, PruneConfig
from edgenas.data import ImageData, Splits, batches
from edgenas.distill import EpochCheckpoint, atomic_torch_save, clean_teacher_logits, fit
from edgenas.errors import ExportCheckError
from edgenas.export import activation_peak, export_for, export_onnx, export_pte, save_openvino_ir, with_metadata
from edgenas.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    json_digest,
    unpack_mlpackage,
    unpack_ncnn,
)
from edgenas.latency_tables import (
    MeasurementBackend,
    Predictor,
    Protocol,
    noop_for,
    placement,
    placement_summary,
    reference_model,
    session_peak_memory_mb,
)
from edgenas.nas import SubnetEvaluator, accuracy
from edgenas.predict import Model, top1
from edgenas.preprocess import METADATA_KEY, preprocessing_metadata
from edgenas.pruning import channel_counts, progressive_prune
from edgenas.quant import XnnpackQat, calibrate_qat, export_qat, prepare_qat
from edgenas.search_spaces import KB, Arch, Footprint, Space, SubNet, Supernet, current_specs, net_footprint
from edgenas.teacher import OnnxTeacher, load_teacher, teacher_files, teacher_input_size

__all__ = [
    "ExportCheckError",
    "FinalizeConfig",
    "finalize_arch",
    "write_device_file",
    "file_accuracy",
    "weights_digest",
    "write_model_card",
]

logger = logging.getLogger(__name__)


# ONNX Runtime requantizes in fixed point where fake quantization rounds in float: logits
# differ by up to about one unit, so images whose top two logits nearly tie can flip (about
# 1 % of Fashion-MNIST test images for trained models, up to 3.5 % for the barely trained
# models of the tests). A broken export (layout, preprocessing, a wrong graph) agrees on a
# fraction of the images near chance instead.
INT8_AGREEMENT_MIN = 0.95
STAGES_CHECKED = ("pruned", "qat_int8")  # the fp32 and int8 candidates, each against its torch model
INT8_FORMATS = ("onnx", "pte")  # the formats whose devices get an int8 model (ncnn and Core ML: fp32 only)
# finalize.qat "auto": QAT runs where the pruned model's PTQ int8 times at least this much faster than its
# fp32 on the device; below it, int8 would be deployed for a gain inside the timing's noise (and a little
# accuracy lost), or not at all: QAT took a sixth of finalize's time for nothing on the headline run
QAT_MIN_SPEEDUP = 1.05
QAT_FILES = ("qat.pt", "qat.json", "qat_epochs.json", "qat_int8.onnx", "qat_int8.pte", "qat_int8.pte.json")


def file_accuracy(path: str | os.PathLike, data: ImageData) -> float:
    """Top-1 of an exported file (ONNX, or an OpenVINO IR) on ``data`` as ``edgenas predict`` runs it:
    its runtime on the CPU, batch 1, the preprocessing its metadata records."""
    return top1(Model.load(path), data)


def _load(path: Path) -> nn.Module:
    return torch.load(path, map_location="cpu", weights_only=False).eval()


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _record(inputs: dict[str, Any]) -> dict[str, Any]:
    """A step's provenance: its inputs and their digest (the key compared on resume)."""
    return {"key": json_digest(inputs), "inputs": json.loads(json.dumps(inputs, default=str))}


def _read_record(path: Path) -> dict[str, Any] | None:
    """The ``.json`` record beside ``path`` where both exist and the record reads, else None."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.with_suffix(".json").read_text())
        return stored if isinstance(stored, dict) and "key" in stored else None
    except (OSError, ValueError):
        return None


def _stored_record(path: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """The ``.json`` record beside ``path`` where ``path`` exists and was made from ``record``'s inputs, else None."""
    stored = _read_record(path)
    if path.exists() and (stored is None or stored["key"] != record["key"]):
        logger.info(
            f"finalize: {path} was made by other inputs (or its record {path.with_suffix('.json').name} is missing); "
            "making it again"
        )
        return None
    return stored


def _agreement(path: Path, torch_model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, max abs difference) of an exported file, run as ``edgenas predict`` runs it, vs torch."""
    forward = Model.load(path).forward
    out = np.concatenate([np.asarray(forward(x[i : i + 1].numpy())).reshape(1, -1) for i in range(len(x))])
    with torch.no_grad():
        torch_out = torch_model.eval()(x).numpy()
    return float((out.argmax(1) == torch_out.argmax(1)).mean()), float(np.abs(out - torch_out).max())


@dataclass
class _Run:
    """One finalize run: what every step reads (fixed before the first) and what the steps made.

    A step is a function of this state; it reads the fields it needs and fills its own.
    """

    arch: Arch
    space: Space
    splits: Splits
    backend: MeasurementBackend
    out: Path
    config: FinalizeConfig
    predictor: Predictor | None
    device: str
    augment: tuple[str, ...]
    data: dict[str, Any] | None
    progress: bool
    accel: Accelerator
    evaluator: SubnetEvaluator
    fingerprint: dict[str, Any]
    supernet_digest: str
    teacher: nn.Module
    teacher_resolution: int
    teacher_source: str
    models: dict[str, nn.Module] = field(default_factory=dict)  # searched, distilled, pruned, qat
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # what made each of them
    step_seconds: dict[str, float] = field(default_factory=dict)  # what each step took when it was made
    steps_made: list[str] = field(default_factory=list)  # the steps made in this call (the others: reused)
    prune_log: list[dict] = field(default_factory=list)
    exports: dict[str, bytes] = field(default_factory=dict)  # stage -> ONNX file
    device_files: dict[str, bytes] = field(default_factory=dict)  # stage -> the device runtime's format (not ONNX)
    predicted: dict[str, dict[str, float | None]] = field(default_factory=dict)  # stage -> size/RAM predictions
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    reference_ms: float | None = None
    teacher_selection: dict[str, Any] | None = None  # the candidates' validation accuracy, when there was a choice
    teacher_clean_logits: torch.Tensor | None = None  # the teacher's, when it teaches from them: computed once
    qat_choice: dict[str, Any] = field(default_factory=dict)  # whether QAT ran, and why (finalize.qat)

    @property
    def res(self) -> int:
        return self.arch.resolution

    @property
    def chans(self) -> int:
        return self.space.in_chs

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.chans, self.res, self.res)

    @property
    def precision(self) -> str:
        """The table's precision: what the memory and size targets of pruning bound."""
        return self.predictor.table.header.get("precision", "fp32") if self.predictor else "fp32"

    @property
    def runtime(self) -> str:
        return self.fingerprint.get("runtime", "onnxruntime")

    @property
    def openvino(self) -> bool:
        return self.runtime.startswith("openvino")

    @property
    def format(self) -> str:
        """The format the device's runtime loads: ``onnx``, ``pte`` (ExecuTorch) or ``ncnn``."""
        return self.fingerprint.get("format", "onnx")

    def timed(self) -> dict[str, bytes]:
        """What the device runs of each stage: its ONNX file, or its file in the device runtime's format."""
        return self.exports if self.format == "onnx" else self.device_files

    def val_acc(self, m: nn.Module) -> float:
        return accuracy(m, self.splits.val, self.splits, resolution=self.res, channels=self.chans)

    def teacher_val_acc(self, m: nn.Module) -> float:
        return accuracy(m, self.splits.val, self.splits, resolution=self.teacher_resolution, channels=self.chans)

    def fit_config(self, epochs: int, lr: float, alpha: tuple[float, float], warmup: float = 0.0) -> FitConfig:
        c = self.config
        return FitConfig(
            epochs=epochs,
            batch_size=c.batch_size,
            lr=lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            warmup_epochs=min(warmup, epochs),
            temperature=c.temperature,
            alpha_start=alpha[0],
            alpha_end=alpha[1],
            label_smoothing=c.label_smoothing,
            augment=self.augment,
            seed=c.seed,
            max_steps_per_epoch=c.max_steps_per_epoch,
            teacher_logits=c.teacher_logits,
        )

    def distillation(self, finetune: FitConfig, **changes: Any) -> dict[str, Any]:
        """The keyword arguments of :func:`fit` that distil from the teacher in ``finetune`` (``changes``
        override; another teacher computes its own clean logits, and a finetune that does not learn from
        the teacher needs none)."""
        kd = dict(
            teacher=self.teacher,
            teacher_resolution=self.teacher_resolution,
            resolution=self.res,
            channels=self.chans,
            progress=self.progress,
            accel=self.accel,
        )
        learns = finetune.epochs and (finetune.alpha_start or finetune.alpha_end)
        if "teacher" not in changes and finetune.teacher_logits == "clean" and learns:
            kd["clean_logits"] = self.clean_logits()
        return {**kd, **changes}

    def clean_logits(self) -> torch.Tensor:
        """The teacher's logits of the un-augmented training images, computed at the first finetune that
        needs them: the distillation and every pruning finetune learn from the same ones."""
        if self.teacher_clean_logits is None:
            self.teacher_clean_logits = clean_teacher_logits(
                self.teacher,
                self.splits,
                resolution=self.teacher_resolution,
                channels=self.chans,
                batch_size=self.config.batch_size,
                accel=self.accel,
                progress=self.progress,
            )
        return self.teacher_clean_logits

    def settings(self, *names: str) -> dict[str, Any]:
        return {k: getattr(self.config, k) for k in names}

    def epoch_checkpoint(self, step: str) -> EpochCheckpoint:
        """Where ``step``'s finetune keeps its state after every epoch, keyed by the step's record: a finalize
        killed in a long distillation resumes after its last finished epoch."""
        return EpochCheckpoint(self.out / f"{step}.epochs.pt", self.records[step]["key"])


def finalize_arch(
    arch: Arch,
    *,
    space: Space,
    supernet: Supernet,
    splits: Splits,
    backend: MeasurementBackend,
    out_dir: str | os.PathLike,
    config: FinalizeConfig = FinalizeConfig(),
    predictor: Predictor | None = None,
    device: str = "local-cpu",
    teacher: nn.Module | None = None,
    teacher_resolution: int | None = None,
    augment: tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every finalize step for ``arch``; returns the model card.

    Finetunes and evaluations run on ``config.device``; saved models and exports are CPU
    models. ``augment``: the training images' augmentation for every finetune. ``data``:
    the data set and split settings (name, root, seed, val_fraction, test_fraction) written
    into every exported model, so ``edgenas predict`` can rebuild the test split.
    """
    # dropout and initialisation draw from torch's global generators: seeded here, the caller's state kept
    with seeded(config.seed, Accelerator.create(config.device)):
        run = _start(
            arch,
            space,
            supernet,
            splits,
            backend,
            Path(out_dir),
            config,
            predictor,
            device,
            teacher,
            teacher_resolution,
            augment,
            data,
            progress,
        )
        if config.teacher_epochs and run.teacher_source == "largest subnet":
            _stronger_teacher(run)
        _make_models(run)
        start = time.time()
        _export(run)
        _check(run)
        _measure(run)
        run.step_seconds["export, check, measure"] = time.time() - start
        card = _card(run)
    write_model_card(card, run.out)
    if card["failed_checks"] and not config.accept_failed_checks:
        raise ExportCheckError(
            f"finalize {run.out}: the {' and '.join(card['failed_checks'])} export failed its "
            f"check against torch ({card['why']}); set finalize.accept_failed_checks: true to "
            "deploy anyway"
        )
    return card


def _start(
    arch: Arch,
    space: Space,
    supernet: Supernet,
    splits: Splits,
    backend: MeasurementBackend,
    out: Path,
    config: FinalizeConfig,
    predictor: Predictor | None,
    device: str,
    teacher: nn.Module | None,
    teacher_resolution: int | None,
    augment: tuple[str, ...],
    data: dict[str, Any] | None,
    progress: bool,
) -> _Run:
    """The run's fixed state: the evaluator, the device's fingerprint (once: an agent's is a request), the teacher."""
    space.validate(arch)
    fingerprint = backend.fingerprint()
    out.mkdir(parents=True, exist_ok=True)
    accel = Accelerator.create(config.device)
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=config.calib_batches, seed=config.seed, accel=accel)
    source = "user model (Python API)" if teacher is not None else "largest subnet"
    files = teacher_files(config.teacher) if teacher is None else []
    if files:
        source = config.teacher if isinstance(config.teacher, str) else ", ".join(config.teacher)
    onnx_teacher = isinstance(teacher, OnnxTeacher) or any(p.suffix == ".onnx" for p in files)
    if onnx_teacher and fingerprint.get("format", "onnx") != "onnx":  # refused before any file is read
        raise ValueError(
            f"finalize.teacher {source!r} is ONNX; device {device!r} runs {fingerprint['format']} files, which "
            "its stage table times the teacher in: give a torch teacher (TorchScript or torch.save) for it"
        )
    if files:
        teacher_resolution = config.teacher_resolution or teacher_input_size(config.teacher) or arch.resolution
        shape = (1, space.in_chs, teacher_resolution, teacher_resolution)
        norm = {"mean": splits.mean, "std": splits.std, "classes": list(splits.train.classes)}
        teacher = load_teacher(config.teacher, shape, splits.num_classes, **norm)
    if teacher is None:
        largest = space.largest()
        teacher, teacher_resolution = evaluator.subnet(largest).cpu(), largest.resolution
    return _Run(
        arch=arch,
        space=space,
        splits=splits,
        backend=backend,
        out=out,
        config=config,
        predictor=predictor,
        device=device,
        augment=augment,
        data=data,
        progress=progress,
        accel=accel,
        evaluator=evaluator,
        fingerprint=fingerprint,
        supernet_digest=weights_digest(supernet),
        teacher=teacher,
        teacher_resolution=teacher_resolution or arch.resolution,
        teacher_source=source,
    )


def _make_models(run: _Run) -> None:
    """Every model step in turn, each saved with its record and reused where the record matches; QAT where
    :func:`_choose_qat` says so."""
    for name, inputs, make in _MODEL_STEPS:
        if name == "qat" and not _choose_qat(run)["run"]:
            continue
        run.models[name] = _model_step(run, name, inputs(run), make)


def _model_step(run: _Run, name: str, inputs: dict[str, Any], make: Callable[[_Run], nn.Module]) -> nn.Module:
    """``name``'s model: reused from ``name.pt`` when its record says the same inputs made it, else made."""
    previous = list(run.records.values())[-1:]
    run.records[name] = _record({"after": previous[0]["key"], **inputs} if previous else inputs)
    path = run.out / f"{name}.pt"
    stored = _stored_record(path, run.records[name]) or _copy_from_another_device(path, run.records[name])
    if stored is not None:
        if "seconds" in stored:  # absent in records of older versions
            run.step_seconds[name] = stored["seconds"]
        return _load(path)
    start = time.time()
    model = make(run)
    run.step_seconds[name] = time.time() - start
    run.steps_made.append(name)
    atomic_torch_save(model, path)
    atomic_write_json(path.with_suffix(".json"), {**run.records[name], "seconds": run.step_seconds[name]})
    run.epoch_checkpoint(name).remove()  # its finetune's state, if it had one: the model is kept now
    return model


def _copy_from_another_device(path: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the same step that another device of the run made from the same inputs, its model and record
    copied to ``path`` (two budgets that chose one arch train it once); None where no device has."""
    for other in sorted(path.parent.parent.glob(f"*/{path.name}")):
        stored = _read_record(other) if other.parent != path.parent else None
        if stored is not None and stored["key"] == record["key"]:
            atomic_write_bytes(path, other.read_bytes())
            atomic_write_json(path.with_suffix(".json"), stored)
            logger.info(f"finalize: {path.stem} of {other.parent.name} reused (made from the same inputs)")
            return stored
    return None


# ---- the model steps: what each one's record holds, and how it makes its model


def _extract_inputs(run: _Run) -> dict[str, Any]:
    s = run.splits
    return {
        "arch": str(run.arch),
        "space": run.space.name,
        "space_spec": repr(run.space),
        "supernet": run.supernet_digest,
        "data": s.describe(),
        "data_norm": [np.asarray(s.mean).tolist(), np.asarray(s.std).tolist()],
        "calib_batches": run.config.calib_batches,
        "seed": run.config.seed,
    }


def _extract(run: _Run) -> nn.Module:
    """The arch with its supernet weights, BatchNorm recalibrated."""
    return run.evaluator.subnet(run.arch).cpu()


def _teacher_inputs(run: _Run) -> dict[str, Any]:
    s = run.splits
    return {
        "teacher": "largest subnet",
        "supernet": run.supernet_digest,
        "data": s.describe(),
        "augment": list(run.augment),
        **run.settings(
            "teacher_epochs",
            "teacher_lr",
            "batch_size",
            "label_smoothing",
            "max_steps_per_epoch",
            "seed",
            "calib_batches",
            "momentum",
            "weight_decay",
        ),
    }


def _train_teacher(run: _Run) -> nn.Module:
    """The largest subnet trained further on its own (labels only), the best epoch on validation kept."""
    c = run.config
    m = copy.deepcopy(run.teacher)
    best = _BestEpoch(run.teacher_val_acc, m, "teacher", run.progress)
    ft = run.fit_config(c.teacher_epochs, c.teacher_lr, (0.0, 0.0), warmup=min(1.0, c.teacher_epochs / 3))
    fit(
        m,
        run.splits,
        ft,
        resolution=run.teacher_resolution,
        channels=run.chans,
        progress=run.progress,
        desc="teacher",
        on_epoch=best,
        accel=run.accel,
        checkpoint=run.epoch_checkpoint("teacher"),
    )
    return best.restore(m, run.out / "teacher_epochs.json")


def _stronger_teacher(run: _Run) -> None:
    """The largest subnet trained further teaches instead of the supernet's, if it measures better on validation."""
    trained = _model_step(run, "teacher", _teacher_inputs(run), _train_teacher)
    further = f"largest subnet, trained {run.config.teacher_epochs} more epochs alone"
    scores = {"largest subnet": run.teacher_val_acc(run.teacher), further: run.teacher_val_acc(trained)}
    chosen = max(scores, key=scores.get)
    run.teacher_selection = {"val_accuracy": scores, "chosen": chosen}
    if chosen == further:
        run.teacher, run.teacher_source = trained, further


def _distill_inputs(run: _Run) -> dict[str, Any]:
    return {
        "teacher": run.teacher_source,
        "teacher_weights": weights_digest(run.teacher),
        "teacher_resolution": run.teacher_resolution,
        "augment": list(run.augment),
        **run.settings(
            "batch_size",
            "temperature",
            "label_smoothing",
            "max_steps_per_epoch",
            "seed",
            "distill_epochs",
            "lr",
            "warmup_epochs",
            "momentum",
            "weight_decay",
            "alpha_start",
            "alpha_end",
        ),
        **_teacher_logits_setting(run),
    }


def _teacher_logits_setting(run: _Run) -> dict[str, str]:
    """``teacher_logits`` for a finetune's record, named only when not "online" (what every record written
    before the setting existed was made with), so that those records still match an online run."""
    return {"teacher_logits": run.config.teacher_logits} if run.config.teacher_logits != "online" else {}


def _distill(run: _Run) -> nn.Module:
    """Finetune with knowledge distillation from the teacher, alpha decaying; the best epoch on validation kept."""
    c = run.config
    m = copy.deepcopy(run.models["searched"])
    best = _BestEpoch(run.val_acc, m, "distill", run.progress)
    ft = run.fit_config(c.distill_epochs, c.lr, (c.alpha_start, c.alpha_end), c.warmup_epochs)
    ckpt = run.epoch_checkpoint("distilled")
    fit(m, run.splits, ft, desc="distill", on_epoch=best, checkpoint=ckpt, **run.distillation(ft))
    return best.restore(m, run.out / "distill_epochs.json")


class _BestEpoch:
    """An ``on_epoch`` for :func:`fit` that keeps the weights of the epoch with the best validation accuracy.

    Epoch 0 is the model before the finetune: a finetune that only loses is undone. The
    curve (every epoch's validation accuracy and loss) is written beside the model. Its state
    (the best epoch's weights, the curve so far) goes into :func:`fit`'s epoch checkpoint.
    """

    def __init__(self, score: Callable[[nn.Module], float], model: nn.Module, name: str, log: bool) -> None:
        self.score, self.name, self.log_lines = score, name, log
        acc = score(model)
        self.best = {"epoch": 0, "val_accuracy": acc, "state": copy.deepcopy(model.state_dict())}
        self.log: list[dict[str, Any]] = [{"epoch": 0, "val_accuracy": acc}]

    def __call__(self, epoch: int, model: nn.Module) -> dict[str, float]:
        acc = self.score(model)
        self.log.append({"epoch": epoch, "val_accuracy": acc})
        if acc > self.best["val_accuracy"]:
            self.best.update(epoch=epoch, val_accuracy=acc, state=copy.deepcopy(model.state_dict()))
        if self.log_lines:
            logger.info(
                f"{self.name} epoch {epoch}: val accuracy {acc * 100:.2f} % "
                f"(best {self.best['val_accuracy'] * 100:.2f} % at epoch {self.best['epoch']})"
            )
        return {"val_accuracy": acc}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "log": self.log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.log = state["best"], state["log"]

    def restore(self, model: nn.Module, curve: Path) -> nn.Module:
        model.load_state_dict(self.best["state"])
        atomic_write_json(curve, {"kept_epoch": self.best["epoch"], "epochs": self.log})
        return model.eval()


def _prune_config(run: _Run) -> PruneConfig:
    """finalize.prune with an "auto" divisor resolved to the channel block the device's table found its
    runtime computing in (counts between two multiples of it run as slow as the next one)."""
    return run.config.prune.resolved(run.predictor.channel_pricing.block if run.predictor else None)


def _prune_inputs(run: _Run) -> dict[str, Any]:
    p = _prune_config(run)
    return {
        "prune": dataclasses.asdict(p),
        **run.settings("prune_finetune_epochs", "prune_lr"),
        **_teacher_logits_setting(run),
        # the device's timings steer pruning only when there is a latency target
        "device": (run.device, run.fingerprint) if p.latency_target_ms else None,
        # and the table's precision, the memory and size targets
        "precision": run.precision if p.ram_target_kb or p.flash_target_kb else None,
    }


def _prune(run: _Run) -> nn.Module:
    """Progressive structured pruning with a short distillation finetune after each step."""
    c, quick, fmt = run.config, Protocol(rounds=5), run.format
    ref, noop = reference_model("fp32", fmt), noop_for(fmt)

    def latency(m: nn.Module) -> float:
        return run.backend.measure([export_for(fmt, m, run.input_shape)], ref, quick, noop)[0][0].ms

    def memory(m: nn.Module) -> tuple[float, float]:  # predicted at the table's precision: RAM, flash
        fp = net_footprint(m)
        return fp.activation_bytes[run.precision] / KB, fp.size_bytes[run.precision] / KB

    ft = run.fit_config(c.prune_finetune_epochs, c.prune_lr, (c.alpha_end, c.alpha_end))
    model, steps = progressive_prune(
        run.models["distilled"],
        torch.zeros(run.input_shape),
        _prune_config(run),
        finetune=lambda m: fit(m, run.splits, ft, desc="prune-finetune", **run.distillation(ft)),
        evaluate=run.val_acc,
        latency=latency if c.prune.latency_target_ms else None,
        memory=memory,
    )
    run.prune_log = [dataclasses.asdict(s) for s in steps]
    atomic_write_json(run.out / "prune_steps.json", run.prune_log)
    return model


def _choose_qat(run: _Run) -> dict[str, Any]:
    """Whether QAT runs (``finalize.qat``) and why; under "auto" the pruned model's fp32 and PTQ int8
    files are timed on the device. The choice is kept in ``qat_choice.json`` for this pruned model,
    setting and device (a resumed run does not time again); where QAT does not run, the files of an
    earlier QAT are removed, so that none is exported, checked or deployed as this run's."""
    setting, path = run.config.qat, run.out / "qat_choice.json"
    key = json_digest({"after": run.records["pruned"]["key"], "qat": setting, "device": run.fingerprint})
    stored = _read(path)
    if isinstance(stored, dict) and stored.get("key") == key:
        choice = stored
    else:
        start = time.time()
        choice = {"key": key, "setting": setting, **_qat_verdict(run, setting)}
        choice["seconds"] = time.time() - start
        atomic_write_json(path, choice)
    run.step_seconds["qat choice"] = choice.get("seconds", 0.0)
    if not choice["run"]:
        for name in QAT_FILES:
            (run.out / name).unlink(missing_ok=True)
    run.qat_choice = choice
    return choice


def _qat_verdict(run: _Run, setting: str) -> dict[str, Any]:
    """``run`` (bool), ``why``, and under "auto" the two timings it rests on."""
    if run.format not in INT8_FORMATS:  # whatever the setting: no int8 file of QAT's would run there
        return {"run": False, "why": f"this runtime ({run.runtime}) gets no int8 model"}
    if setting != "auto":
        return {"run": setting == "always", "why": f"finalize.qat: {setting}"}
    pruned, fmt, calibration = run.models["pruned"], run.format, _calibration_images(run)
    files = [export_for(fmt, pruned, run.input_shape, precision=p, calibration=calibration) for p in ("fp32", "int8")]
    timing, _, _ = run.backend.measure(files, reference_model("fp32", fmt), Protocol(rounds=10), noop_for(fmt))
    fp32_ms, int8_ms = (t.ms for t in timing)
    speedup = fp32_ms / int8_ms
    runs = speedup >= QAT_MIN_SPEEDUP
    why = (
        f"QAT {'runs' if runs else 'skipped'}: the pruned model's PTQ int8 timed {int8_ms:.3f} ms vs fp32 "
        f"{fp32_ms:.3f} ms ({speedup:.2f}x the fp32 speed; QAT where >= {QAT_MIN_SPEEDUP}x"
        + ("" if runs else "; finalize.qat: always runs it anyway")
        + ")"
    )
    return {"run": runs, "why": why, "fp32_ms": fp32_ms, "int8_ms": int8_ms}


def _calibration_images(run: _Run) -> np.ndarray:
    """64 training images (normalised, the arch's input size): what post-training quantization calibrates on."""
    s = run.splits
    x, _ = next(
        batches(
            s.train,
            batch_size=64,
            resolution=run.res,
            channels=run.chans,
            mean=s.mean,
            std=s.std,
            shuffle=True,
            rng=np.random.default_rng(run.config.seed),
        )
    )
    return x.numpy()


def _qat_inputs(run: _Run) -> dict[str, Any]:
    scheme = "xnnpack" if run.format == "pte" else "onnxruntime"  # whose int8 the fake quantization is
    return {
        **run.settings("qat_epochs", "qat_lr", "qat_alpha", "calib_batches"),
        "scheme": scheme,
        **_teacher_logits_setting(run),
    }


def _qat(run: _Run) -> nn.Module:
    """Quantization-aware finetuning distilled from the pruned model's own fp32 outputs; the best epoch is kept.

    A finetune of a model this close to converged can lose a little: the epoch (0:
    calibrated, not yet finetuned) with the best validation accuracy is the one exported.
    """
    c, s, pruned = run.config, run.splits, run.models["pruned"]
    # the fake quantization of the int8 model the device runs: XNNPACK's for ExecuTorch, else ONNX Runtime's
    q = XnnpackQat(pruned, run.input_shape) if run.format == "pte" else prepare_qat(pruned)
    calib = batches(
        s.train,
        batch_size=c.batch_size,
        resolution=run.res,
        channels=run.chans,
        mean=s.mean,
        std=s.std,
        shuffle=True,
        rng=np.random.default_rng(c.seed),
        limit=c.calib_batches,
    )
    calibrate_qat(q, (x for x, _ in calib))
    best = _BestEpoch(run.val_acc, q, "qat", run.progress)
    # fake quantisation wants fp32: no autocast in QAT
    ft = run.fit_config(c.qat_epochs, c.qat_lr, (c.qat_alpha, c.qat_alpha))
    own = run.distillation(ft, teacher=pruned.eval(), teacher_resolution=run.res, accel=run.accel.fp32())
    fit(q, s, ft, desc="qat", on_epoch=best, checkpoint=run.epoch_checkpoint("qat"), **own)
    return best.restore(q, run.out / "qat_epochs.json")


_MODEL_STEPS: tuple[tuple[str, Callable[[_Run], dict[str, Any]], Callable[[_Run], nn.Module]], ...] = (
    ("searched", _extract_inputs, _extract),
    ("distilled", _distill_inputs, _distill),
    ("pruned", _prune_inputs, _prune),
    ("qat", _qat_inputs, _qat),
)


# ---- export, check, measure, card


def _export(run: _Run) -> None:
    """Every stage as an ONNX file carrying its preprocessing, classes and arch (edgenas predict needs nothing else).

    A symbolic batch by default: free in ONNX Runtime, 1.2-1.5x slower at batch 1 in
    OpenVINO (:func:`export_onnx`), whose devices keep batch 1.
    """
    s, m, shape = run.splits, run.models, run.input_shape
    kw = {"dynamic_batch": not run.openvino}
    calibration = _calibration_images(run)
    t = run.teacher_resolution
    files = {
        "teacher": (
            run.teacher.export(**kw)
            if isinstance(run.teacher, OnnxTeacher)
            else export_onnx(run.teacher, (1, run.chans, t, t), **kw)
        ),
        "searched": export_onnx(m["searched"], shape, **kw),
        "distilled": export_onnx(m["distilled"], shape, **kw),
        "pruned": export_onnx(m["pruned"], shape, **kw),
        **({"qat_int8": export_qat(m["qat"], shape, **kw)} if "qat" in m else {}),
        "ptq_int8": export_onnx(m["pruned"], shape, precision="int8", calibration=calibration, **kw),
    }
    pruned = net_footprint(m["pruned"])
    footprints = {
        "teacher": net_footprint(run.teacher) if isinstance(run.teacher, SubNet) else None,
        "searched": net_footprint(m["searched"]),
        "distilled": net_footprint(m["distilled"]),
        **dict.fromkeys(("pruned", "qat_int8", "ptq_int8"), pruned),
    }
    metas = {}
    for name, model in files.items():
        teacher = name == "teacher"
        meta = preprocessing_metadata(
            resolution=t if teacher else run.res,
            channels=run.chans,
            mean=s.mean,
            std=s.std,
            classes=list(s.train.classes),
            arch=run.teacher_source if teacher else str(run.arch),
            space=run.space.name,
            data=run.data or {"name": s.train.name.removesuffix("-train")},
            batch="dynamic" if kw["dynamic_batch"] else 1,
        )
        run.exports[name] = with_metadata(model, meta)
        atomic_write_bytes(run.out / f"{name}.onnx", run.exports[name])
        run.predicted[name] = _predicted_footprint(footprints[name], name, meta)
        metas[name] = meta
    if run.format != "onnx":
        _device_exports(run, calibration, metas)


def _device_exports(run: _Run, calibration: np.ndarray, metas: dict[str, dict[str, str]]) -> None:
    """Each stage in the device runtime's format (ExecuTorch ``.pte``, ncnn ``.param``/``.bin``), metadata beside it.

    fp32 stages as they are. int8 for ExecuTorch in XNNPACK's pt2e scheme: ``qat_int8`` converted
    from the graph QAT finetuned in that scheme (:class:`edgenas.quant.XnnpackQat`), ``ptq_int8``
    the pruned model quantized by XNNPACK's quantizer calibrated on training images. ncnn gets
    fp32 only (its int8 tools are not in its Python package).
    """
    fmt, m, shape, t = run.format, run.models, run.input_shape, run.teacher_resolution
    makers = {
        "teacher": lambda: export_for(fmt, run.teacher, (1, run.chans, t, t)),
        **{k: (lambda k=k: export_for(fmt, m[k], shape)) for k in ("searched", "distilled", "pruned")},
    }
    if fmt == "pte":
        if "qat" in m:
            makers["qat_int8"] = m["qat"].to_pte
        makers["ptq_int8"] = lambda: export_pte(m["pruned"], shape, precision="int8", calibration=calibration)
    for name, make in makers.items():
        run.device_files[name] = make()
        write_device_file(run.out / name, fmt, run.device_files[name], metas[name])


def write_device_file(stem: Path, fmt: str, model: bytes, meta: dict[str, str]) -> Path:
    """``stem.pte`` (ExecuTorch), ``stem.param`` + ``stem.bin`` (ncnn) or the folder ``stem.mlpackage`` (Core ML),
    and the metadata in ``<file>.json`` (these formats have no place for it); returns the file
    :class:`edgenas.predict.Model` loads."""
    if fmt == "pte":
        path = atomic_write_bytes(stem.with_suffix(".pte"), model)
    elif fmt == "mlpackage":
        path = stem.with_suffix(".mlpackage")
        with tempfile.TemporaryDirectory(dir=stem.parent) as tmp:  # complete before it takes the name
            shutil.rmtree(path, ignore_errors=True)
            os.replace(unpack_mlpackage(model, tmp), path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            param, weights, _ = unpack_ncnn(model, tmp)
            atomic_write_bytes(stem.with_suffix(".bin"), Path(weights).read_bytes())
            path = atomic_write_bytes(stem.with_suffix(".param"), Path(param).read_bytes())
    atomic_write_text(Path(f"{path}.json"), meta[METADATA_KEY])  # the JSON text ONNX files carry
    return path


def _device_path(run: _Run, stage: str) -> Path:
    """The file of a stage as the device runs it."""
    return run.out / f"{stage}.{ {'onnx': 'onnx', 'pte': 'pte', 'ncnn': 'param'}.get(run.format, run.format) }"


def _check(run: _Run) -> None:
    """The fp32 export against torch (max abs difference), the int8 one against fake quantization (top-1 agreement)."""
    s = run.splits
    test_x = next(batches(s.test, batch_size=200, resolution=run.res, channels=run.chans, mean=s.mean, std=s.std))[0]
    # the files the device runs (Core ML's only on a Mac: its ONNX twin here)
    fp32, int8 = (_device_path(run, n) if run.format != "mlpackage" else run.out / f"{n}.onnx" for n in STAGES_CHECKED)
    fp32_agree, fp32_diff = _agreement(fp32, run.models["pruned"], test_x)
    int8_agree, int8_diff = _agreement(int8, run.models["qat"], test_x) if int8.exists() else (None, None)
    run.checks = {
        "fp32_vs_torch": {
            "file": fp32.name,
            "top1_agreement": fp32_agree,
            "max_abs_diff": fp32_diff,
            "ok": fp32_diff < 1e-3,
        },
        "int8_vs_fake_quant": {
            "file": int8.name,
            "top1_agreement": int8_agree,
            "max_abs_diff": int8_diff,
            "ok": int8_agree is None or int8_agree >= INT8_AGREEMENT_MIN,
        },
    }


def _measure(run: _Run) -> None:
    """Every stage's file timed on the device in one interleaved batch, its peak memory and test accuracy."""
    s, timed, fmt = run.splits, run.timed(), run.format
    names = list(timed)
    timing, ref, _ = run.backend.measure(
        [timed[n] for n in names],
        reference_model("fp32", fmt),
        Protocol(rounds=run.config.measure_rounds),
        noop_for(fmt),
    )
    run.reference_ms = ref.ms
    in_torch = {"teacher": run.teacher, **{n: run.models[n] for n in ("searched", "distilled", "pruned")}}
    for n, t in zip(names, timing):
        model = run.exports[n]  # ONNX: peak memory and activations are the graph's, whatever runs it
        if n in in_torch:
            r = run.teacher_resolution if n == "teacher" else run.res
            acc = accuracy(in_torch[n], s.test, s, resolution=r, channels=run.chans)
        else:
            acc = file_accuracy(_device_path(run, n), s.test)
        run.stages.append(
            {
                "stage": n,
                "file": _device_path(run, n).name,
                "precision": "int8" if n.endswith("int8") else "fp32",
                "size_mb": len(timed[n]) / 1e6,
                "latency_ms": t.ms,
                "latency_spread": t.spread,
                "peak_memory_mb": session_peak_memory_mb(model, threads=1),
                "test_accuracy": acc,
                "size_kb": len(timed[n]) / KB,
                "activation_kb": activation_peak(model) / KB,
                **run.predicted[n],
            }
        )
    t0 = run.stages[0]  # the teacher
    for r in run.stages:
        r["size_vs_teacher_pct"] = (r["size_mb"] / t0["size_mb"] - 1) * 100
        r["speedup_vs_teacher"] = t0["latency_ms"] / r["latency_ms"]
        mem0 = t0["peak_memory_mb"]
        r["memory_vs_teacher_pct"] = (r["peak_memory_mb"] / mem0 - 1) * 100 if mem0 else None


def _deploy(run: _Run) -> dict[str, Any]:
    """The precision deployed, why, the failed checks, and the deployed file (an OpenVINO IR for OpenVINO)."""
    by = {r["stage"]: r for r in run.stages}
    failed = [p for p, c in (("fp32", "fp32_vs_torch"), ("int8", "int8_vs_fake_quant")) if not run.checks[c]["ok"]]
    int8_ms = by["qat_int8"]["latency_ms"] if "qat_int8" in by else None
    chosen, why = _choose_precision(
        by["pruned"]["latency_ms"], int8_ms, failed, run.config.accept_failed_checks, run.qat_choice["why"]
    )
    stage = {"int8": "qat_int8", "fp32": "pruned"}.get(chosen)
    deployed = {
        "runtime": run.runtime,
        "device": run.fingerprint.get("providers"),
        "precision": chosen,
        "file": _device_path(run, stage).name if stage else None,
        "test_accuracy": by[stage]["test_accuracy"] if stage else None,
    }
    if stage and run.openvino:  # the model in the form its device runs: OpenVINO IR
        xml = save_openvino_ir(run.exports[stage], run.out / f"{stage}.xml")
        deployed.update(file=xml.name, test_accuracy=file_accuracy(xml, run.splits.test))
    elif stage and run.format == "mlpackage":  # Core ML runs only on Apple's systems: torch's score, said so
        deployed.update(scored_by="torch (fp32): run edgenas predict on a Mac to score it as Core ML runs it")
    elif stage and run.format != "onnx":  # scored as the device's runtime runs it
        deployed.update(test_accuracy=file_accuracy(_device_path(run, stage), run.splits.test))
    return {
        "chosen_precision": chosen,
        "chosen_model": f"{stage}.onnx" if stage else None,
        "deployed": deployed,
        "why": why,
        "failed_checks": failed,
    }


def _placements(run: _Run) -> dict[str, Any] | None:
    """Which kernel ran each node of the fp32 and int8 candidates, as the device's runtime reports it
    (in process only: an agent does not report placements yet)."""
    runtime = getattr(run.backend, "runtime", None)
    if runtime is None:
        return None
    out, timed = {}, run.timed()
    for stage in ("pruned", "qat_int8"):
        if stage in timed:
            rows = placement(runtime, timed[stage])
            out[stage] = {"summary": placement_summary(rows), "rows": rows}
    return out


def _card(run: _Run) -> dict[str, Any]:
    """The model card: what was deployed and why, every stage's figures, the checks, what made each step."""
    m = run.models
    return {
        "arch": str(run.arch),
        "space": run.space.name,
        "data_sizes": run.splits.describe(),  # how many images each accuracy rests on
        "device": run.device,
        "device_fingerprint": run.fingerprint,
        "compute": run.accel.describe(),
        "teacher": run.teacher_source,
        **_deploy(run),
        "placement": _placements(run),
        **_prediction(run.predictor, run.arch, m["searched"], m["pruned"]),
        "measured_reference_ms": run.reference_ms,
        "stages": run.stages,
        "checks": run.checks,
        "prune_steps": run.prune_log or _read(run.out / "prune_steps.json"),
        "qat_epochs": _read(run.out / "qat_epochs.json"),
        "distill_epochs": _read(run.out / "distill_epochs.json"),
        "teacher_selection": run.teacher_selection,
        "qat_choice": {k: v for k, v in run.qat_choice.items() if k not in ("key", "seconds")},
        # what each step cost or gained: validation accuracy after it (QAT: the fake-quant model)
        "validation": {
            "teacher": run.teacher_val_acc(run.teacher),
            **{name: run.val_acc(model) for name, model in m.items()},
        },
        "searched_channels": channel_counts(m["searched"]),
        "pruned_channels": channel_counts(m["pruned"]),
        "config": dataclasses.asdict(run.config),
        "step_seconds": run.step_seconds,
        "steps_made": run.steps_made,
        "steps": {name: r["key"] for name, r in run.records.items()},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }


def _choose_precision(
    fp32_ms: float, int8_ms: float | None, failed: list[str], accept: bool, no_int8: str
) -> tuple[str | None, str]:
    """The faster precision among those whose export passed its check (all of them with ``accept``);
    fp32 where there is no QAT int8 model (``int8_ms`` None; ``no_int8``: why, the QAT choice's reason)."""
    if int8_ms is None:
        if accept or "fp32" not in failed:
            return "fp32", f"measured fp32 {fp32_ms:.3f} ms; {no_int8}"
        return None, f"no precision deployed: the fp32 export failed its check; {no_int8}"
    timing = (
        f"measured int8 (QAT) {int8_ms:.3f} ms vs fp32 {fp32_ms:.3f} ms (int8 is {fp32_ms / int8_ms:.2f}x "
        "the fp32 speed) on this device"
    )
    allowed = [p for p in ("fp32", "int8") if accept or p not in failed]
    if not allowed:
        return None, f"{timing}; no precision deployed: both exports failed their checks"
    chosen = min(allowed, key=lambda p: int8_ms if p == "int8" else fp32_ms)
    if not failed:
        return chosen, timing
    verdict = "accepted (finalize.accept_failed_checks)" if accept else "not deployed"
    return chosen, f"{timing}; the {' and '.join(failed)} export failed its check: {verdict}"


def _prediction(predictor: Predictor | None, arch: Arch, searched: nn.Module, pruned: nn.Module) -> dict[str, Any]:
    """The table's prediction for each export of the table's precision, from that model's own blocks.

    An fp32 table predicts ``searched`` and ``distilled`` (the searched arch) and ``pruned``;
    an int8 table predicts ``qat_int8`` and ``ptq_int8`` (both made from the pruned model).
    Blocks whose channel counts pruning changed are estimated from the table's entries of
    the same shape (:meth:`Predictor.predict_specs`).
    """
    if predictor is None:
        return {"predicted_ms": None}
    precision = predictor.table.header.get("precision", "fp32")
    arch_ms = predictor.predict(arch)
    pruned_ms = predictor.predict_specs(current_specs(pruned))
    extrapolated = predictor.extrapolation(predictor.space.block_specs(arch))
    estimated = channel_counts(pruned) != channel_counts(searched)
    stages = (
        {"searched": arch_ms, "distilled": arch_ms, "pruned": pruned_ms}
        if precision == "fp32"
        else {"qat_int8": pruned_ms, "ptq_int8": pruned_ms}
    )
    return {
        "predicted_ms": arch_ms,
        "predicted_precision": precision,
        "predicted_stage_ms": stages,
        "predicted_pruned_estimated": estimated,
        "predicted_ms_note": f"calibrated {precision} latency-table prediction for the searched arch; "
        + (
            "the pruned model's blocks estimated from entries of the same shape"
            if estimated
            else "pruning left the arch as it was"
        )
        + (f"; the searched arch: {extrapolated}" if extrapolated else ""),
        "predicted_extrapolated": extrapolated,
    }


def _predicted_footprint(fp: Footprint | None, stage: str, meta: dict[str, str]) -> dict[str, Any]:
    """The size and activation-memory predictions for one export (None where they do not apply).

    The size is the graph's (:func:`net_footprint`) plus the metadata edgenas writes into
    the file; it describes fp32 and the QAT int8 export, not ONNX Runtime's PTQ format (an
    int32 bias and its own scale per channel: 4-9 % larger).
    """
    if fp is None:
        return {"predicted_size_kb": None, "predicted_activation_kb": None}
    precision = "int8" if stage.endswith("int8") else "fp32"
    meta_bytes = sum(len(k.encode()) + len(v.encode()) + 8 for k, v in meta.items())
    size = None if stage == "ptq_int8" else (fp.size_bytes[precision] + meta_bytes) / KB
    return {"predicted_size_kb": size, "predicted_activation_kb": fp.activation_bytes[precision] / KB}


def _read(path: Path) -> Any:
    from edgenas.io import read_json

    return read_json(path) if path.exists() else []


def write_model_card(card: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """model_card.json and model_card.md (with the stage table, drawn by :mod:`edgenas.reports`) in ``out_dir``."""
    from edgenas.reports import model_card_markdown

    out = Path(out_dir)
    atomic_write_json(out / "model_card.json", card)
    atomic_write_text(out / "model_card.md", model_card_markdown(card))
