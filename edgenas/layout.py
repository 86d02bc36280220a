"""The run directory and the records in it: where each artifact lives, and the facts read from them.

One place knows the layout (config, pipeline, finalize, reports and the CLI all ask
:class:`RunLayout`), and the records several modules read (the model card, the search's
front file) are read through one class each, so "which file was deployed" or "which arch
meets a device's budget" is answered once. Standard library only (and :mod:`edgenas.io`): a device, a report
viewer or a config loader reads these without torch.

::

    RUN_DIR/
      config.resolved.yaml        the configuration the stages ran with
      manifests/<stage>.json      per stage: input hash, versions, compute, outputs
      luts/<device>.json          a device's latency table (unless the config names one)
      luts/<device>_validation.json
      supernet.pt                 the supernet checkpoint
      supernet_training.json      its training budget and curves
      search/                     study.db, trials.csv, pareto.json, references.json
      finalize/<device>/          each step's model and record, exports, model_card.{json,md}
      report/                     report.html, data/*.csv, png/
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenas.io import read_json

__all__ = ["STAGE_COLUMNS", "STAGES", "Front", "ModelCard", "RunLayout"]

STAGES = ("lut", "train", "search", "finalize", "report")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory. ``luts``: tables a config names itself, by device."""

    root: Path
    luts: Mapping[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def resolved_config(self) -> Path:
        return self.root / "config.resolved.yaml"

    def manifest(self, stage: str) -> Path:
        return self.root / "manifests" / f"{stage}.json"

    def started(self, stage: str) -> Path:
        """The input hash of a stage that began and has not finished."""
        return self.manifest(stage).with_suffix(".started")

    def lut(self, device: str) -> Path:
        own = self.luts.get(device)
        return Path(own) if own else self.root / "luts" / f"{device}.json"

    def owns_lut(self, device: str) -> bool:
        """Whether the run made ``device``'s table (it may remove it), or the user named it (never removed)."""
        return not self.luts.get(device)

    def lut_validation(self, device: str) -> Path:
        path = self.lut(device)
        return path.with_name(path.stem + "_validation.json")

    @property
    def supernet(self) -> Path:
        return self.root / "supernet.pt"

    @property
    def training(self) -> Path:
        """The supernet's training budget and per-epoch curves (JSON, for the report)."""
        return self.root / "supernet_training.json"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def trials(self) -> Path:
        return self.search / "trials.csv"

    @property
    def front(self) -> Path:
        return self.search / "pareto.json"

    @property
    def references(self) -> Path:
        return self.search / "references.json"

    def predictor_histories(self) -> list[Path]:
        return sorted(self.search.glob("predictor_worker*.json"))

    @property
    def finalize_root(self) -> Path:
        return self.root / "finalize"

    def finalize(self, device: str) -> Path:
        return self.finalize_root / device

    def model_card(self, device: str) -> Path:
        return self.finalize(device) / "model_card.json"

    def deployed_file(self, device: str) -> Path | None:
        """The file finalize deployed for ``device`` (None before finalize, or when nothing passed its checks)."""
        path = self.model_card(device)
        card = ModelCard.load(path) if path.exists() else None
        return self.finalize(device) / card.deployed_file if card and card.deployed_file else None

    @property
    def report(self) -> Path:
        return self.root / "report"


# The stage table's columns, in the order every rendering shows them (model card, report, benches).
STAGE_COLUMNS = (
    "stage",
    "precision",
    "size_mb",
    "latency_ms",
    "peak_memory_mb",
    "test_accuracy",
    "size_vs_teacher_pct",
    "speedup_vs_teacher",
    "memory_vs_teacher_pct",
    "size_kb",
    "predicted_size_kb",
    "activation_kb",
    "predicted_activation_kb",
)


@dataclass(frozen=True)
class ModelCard:
    """A finalized model's card (``model_card.json``): what was deployed, and every stage's figures."""

    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        return cls(read_json(path, "model card"))

    @property
    def arch(self) -> str:
        return self.data["arch"]

    @property
    def precision(self) -> str | None:
        """The deployed precision (``fp32``, ``int8``), None when no export passed its checks."""
        return self.data.get("chosen_precision")

    @property
    def deployed_stage(self) -> str | None:
        """The stage whose model was deployed: ``qat_int8``, ``pruned`` or None."""
        onnx = self.data.get("chosen_model")
        return onnx.removesuffix(".onnx") if onnx else None

    @property
    def deployed_file(self) -> str | None:
        """The file name a device runs: the runtime's own format (an OpenVINO IR's ``.xml``) or the ONNX file."""
        return (self.data.get("deployed") or {}).get("file") or self.data.get("chosen_model")

    @property
    def teacher_logits(self) -> str:
        """How the teacher taught: ``clean`` (its logits of the un-augmented training images, computed once) or
        ``online`` (run on every augmented batch; a card made before the setting existed names none)."""
        return self.data.get("config", {}).get("teacher_logits", "online")

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """Each stage's row (teacher, searched, distilled, pruned, qat_int8, ptq_int8) by name."""
        return {r["stage"]: r for r in self.data["stages"]}

    @property
    def deployed(self) -> dict[str, Any] | None:
        """The deployed stage's row, None when nothing was deployed."""
        stage = self.deployed_stage
        return self.stages[stage] if stage else None

    def stage_rows(self) -> list[dict[str, Any]]:
        """The stage table: one row per stage with :data:`STAGE_COLUMNS` (None where an older card lacks one)."""
        return [{c: r.get(c) for c in STAGE_COLUMNS} for r in self.data["stages"]]


@dataclass(frozen=True)
class Front:
    """The search's results file (``pareto.json``): the Pareto set and each device's own front."""

    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Front:
        return cls(read_json(path, "search results (Pareto set)"))

    def rows(self, device: str | None = None) -> list[dict[str, Any]]:
        """The Pareto set, or ``device``'s own front (accuracy vs its latency)."""
        return self.data.get("per_device", {}).get(device, self.data["pareto"]) if device else self.data["pareto"]

    def budgets(self, device: str) -> dict[str, float] | None:
        return (self.data.get("budgets") or {}).get(device)

    def within_budget(self, device: str) -> list[dict[str, Any]]:
        """``device``'s front, the archs that meet its budgets."""
        return [r for r in self.rows(device) if r.get(f"within_budget:{device}", True)]

    def best(self, device: str) -> dict[str, Any] | None:
        """The arch the search chose for ``device`` (``search.tie_pts``); in a file written before
        the search chose, the most accurate arch of its front that meets its budgets."""
        if "chosen" in self.data:
            return self.data["chosen"].get(device)
        ok = self.within_budget(device)
        return max(ok, key=lambda r: r["accuracy"]) if ok else None
