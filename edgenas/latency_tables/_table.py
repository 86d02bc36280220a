"""The latency-table file: a header of table-wide settings, one entry per block key.

JSON, written atomically after every measured batch, so a killed build loses at most the
batch in flight. The header holds what must match for two latencies to be comparable
(device fingerprint, providers, threads, precision, ONNX Runtime version, opset, batch,
space); :meth:`LatencyTable.check` refuses a table whose header differs from a request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgenas.io import atomic_write_json, read_json

__all__ = ["FORMAT", "GRAPH_REVISIONS", "LatencyTable", "TableMismatchError", "graph_revision"]

FORMAT = "edgenas-latency-table/1"
# Header keys that decide whether a table can serve a request or a resumed build.
MATCH_KEYS = (
    "device",
    "precision",
    "threads",
    "providers",
    "runtime",
    "onnxruntime",
    "opset",
    "batch",
    "space",
    "cpu",
    "graph_revision",
)
# The revision of the graphs edgenas exports in each model format, bumped when a block's exported
# graph changes in a way its runtime times differently: a table timed on older graphs is then
# refused, not reused. pte 2: the classifier's pool keeps its dims and XNNPACK runs it (before, a
# portable kernel ran it between two delegate calls). ONNX graphs gained a Flatten there, which
# ONNX Runtime runs in no measurable time (48.5 vs 48.9 us for the head alone): still revision 1.
GRAPH_REVISIONS = {"pte": 2}


def graph_revision(fmt: str) -> int:
    """The revision of the graphs exported in model format ``fmt`` (1 unless GRAPH_REVISIONS says otherwise)."""
    return GRAPH_REVISIONS.get(fmt, 1)


class TableMismatchError(ValueError):
    """A table's header does not match what was asked for."""


# The fingerprint keys that identify the machine and runtime a table's timings hold for.
DEVICE_KEYS = ("cpu", "runtime", "onnxruntime", "threads", "providers")


@dataclass
class LatencyTable:
    header: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None

    def check(self, expected: dict[str, Any], source: str = "table") -> None:
        """Raise TableMismatchError naming every header key whose value differs from ``expected``."""
        diffs = [
            f"{k}: table has {self.header.get(k)!r}, requested {v!r}"
            for k, v in expected.items()
            if k in MATCH_KEYS and self.header.get(k) != v
        ]
        if diffs:
            raise TableMismatchError(f"{source} does not match the request ({'; '.join(diffs)})")

    def check_device(self, fingerprint: dict[str, Any], source: str) -> None:
        """Raise TableMismatchError unless ``fingerprint`` (a backend's) is the machine and runtime the table timed:
        predictions compared with this device's measurements would otherwise mix two devices."""
        expected = {k: fingerprint[k] for k in DEVICE_KEYS if k in fingerprint}
        self.check({**expected, "graph_revision": graph_revision(fingerprint.get("format", "onnx"))}, source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "header": self.header,
            "calibration": self.calibration,
            "validation": self.validation,
            "entries": dict(sorted(self.entries.items())),
        }

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, expect: dict[str, Any] | None = None) -> LatencyTable:
        data = read_json(path, "latency table")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not an edgenas latency table (expected format {FORMAT!r})")
        if isinstance(data.get("header"), dict) and "runtime" not in data["header"] and "onnxruntime" in data["header"]:
            # tables of earlier versions: ONNX Runtime measured every one of them
            data["header"]["runtime"] = f"onnxruntime {data['header']['onnxruntime']}"
        if isinstance(data.get("header"), dict):
            data["header"].setdefault("graph_revision", 1)  # tables from before revisions were counted
            if isinstance(data["header"].get("protocol"), dict):  # timed before turns began with an untimed run
                data["header"]["protocol"].setdefault("turn_warmup", 0)
        _check_fields(data, str(path))
        table = cls(
            header=data["header"],
            entries=data.get("entries", {}),
            calibration=data.get("calibration"),
            validation=data.get("validation"),
        )
        if expect:
            table.check(expect, f"latency table {str(path)!r}")
        return table


# A finished table also has these (a table whose build was interrupted does not yet).
FINISHED_KEYS = ("space_def", "reference_ms", "noop_rel")


def _check_fields(data: dict[str, Any], path: str) -> None:
    """One clear error for a table file that is valid JSON but lacks what edgenas reads from it."""
    header = data.get("header")
    if not isinstance(header, dict):
        raise ValueError(f"latency table {path!r} has no header; rebuild it with `edgenas lut build`")
    missing = [k for k in MATCH_KEYS if k not in header]
    if missing:
        raise ValueError(f"latency table {path!r}: its header lacks {missing}; rebuild it with `edgenas lut build`")
    entries = data.get("entries", {})
    bad = (
        [k for k, e in entries.items() if not isinstance(e, dict) or not {"rel", "params"} <= set(e)]
        if isinstance(entries, dict)
        else ["entries"]
    )
    if bad:
        raise ValueError(
            f"latency table {path!r}: entry {bad[0]!r} lacks 'rel' or 'params' ({len(bad)} such); "
            "rebuild it with `edgenas lut build`"
        )
    cal = data.get("calibration")
    if cal is not None and not (isinstance(cal, dict) and {"features", "coef"} <= set(cal)):
        raise ValueError(
            f"latency table {path!r}: its calibration lacks 'features' or 'coef'; "
            f"validate it again with `edgenas lut validate {path}`"
        )
