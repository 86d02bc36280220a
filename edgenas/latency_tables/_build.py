"""Building a latency table: export every block, time it in batches, write after each batch.

Resumable by construction: entries already in the output file are kept, only missing (or
still too noisy) keys are measured, and the file is replaced atomically after every batch,
so ``kill -9`` costs at most the batch in flight. At the end a sample of the first entries
is timed again to report how much the device drifted during the build.

Besides the space's own blocks, a table times its classifiers at a few hidden widths no arch
has (:func:`table_specs`): pruning narrows that layer, and only entries where it varies tell
how the runtime charges for it (ExecuTorch's XNNPACK on an AVX-512 EPYC ran a 400-input
classifier of 712 hidden units as slowly as one of 1024, one of 704 a fifth faster).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.export import OPSET, PRECISIONS
from edgenas.latency_tables._backend import MeasurementBackend
from edgenas.latency_tables._models import block_model, noop_for, reference_model
from edgenas.latency_tables._protocol import Protocol
from edgenas.latency_tables._table import LatencyTable, TableMismatchError, graph_revision
from edgenas.progress import progress as progress_bar
from edgenas.search_spaces import BlockSpec, Space, spec_params

__all__ = ["build_table", "restrict_space", "table_header", "table_specs"]


def restrict_space(
    space: Space, resolutions: Sequence[int] | None = None, widths: Sequence[float] | None = None
) -> Space:
    """The space limited to some of its resolutions and widths (errors name what is allowed)."""
    for name, values, allowed in (("resolution", resolutions, space.resolutions), ("width", widths, space.widths)):
        for v in values or ():
            if v not in allowed:
                raise ValueError(f"{name} {v} is not in space {space.name!r}; allowed: {allowed}")
    return dataclasses.replace(
        space,
        resolutions=tuple(resolutions) if resolutions else space.resolutions,
        widths=tuple(widths) if widths else space.widths,
    )


def table_specs(space: Space) -> list[BlockSpec]:
    """The blocks a table of ``space`` times: every block of its archs, and each classifier at the hidden
    widths of :func:`classifier_probes`."""
    specs = list(space.all_block_specs())
    return specs + [p for s in specs if s.kind == "classifier" for p in classifier_probes(s)]


def classifier_probes(spec: BlockSpec) -> list[BlockSpec]:
    """``spec`` at hidden widths pruning reaches: half of it, and three quarters plus 8 and plus 16.

    Pruning narrows a classifier's hidden width to counts no space lists (a space's ``feature_choices``
    are a few round ones, most spaces have none), so without these a table cannot tell a line through
    its classifiers how that width costs, nor whether the runtime runs counts that leave a short tail
    over its vector width slower (multiples of 8, as pruning keeps)."""
    three_quarters = spec.mid_chs * 3 // 4 // 8 * 8
    widths = {max(8, spec.mid_chs // 2 // 8 * 8), three_quarters + 8, three_quarters + 16}
    return [dataclasses.replace(spec, mid_chs=w) for w in sorted(widths) if w < spec.mid_chs]


def table_header(space: Space, backend: MeasurementBackend, device: str, precision: str) -> dict[str, Any]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    fp = backend.fingerprint()
    return {
        "device": device,
        "precision": precision,
        "threads": fp["threads"],
        "providers": fp["providers"],
        # an agent of an earlier version ran ONNX Runtime and did not say so
        "runtime": fp.get("runtime", f"onnxruntime {fp['onnxruntime']}"),
        "onnxruntime": fp["onnxruntime"],
        "cpu": fp["cpu"],
        "opset": OPSET,
        "batch": 1,
        "space": space.name,
        "graph_revision": graph_revision(fp.get("format", "onnx")),
        "fingerprint": fp,
    }


def _aggregate(header: dict[str, Any]) -> None:
    batches = header["batches"]
    header["reference_ms"] = float(np.median([b["reference_ms"] for b in batches]))
    header["noop_rel"] = float(np.median([b["noop_rel"] for b in batches]))
    header["noop_ms"] = float(np.median([b["noop_ms"] for b in batches]))


def build_table(
    space: Space,
    backend: MeasurementBackend,
    out: str | os.PathLike,
    *,
    device: str = "local-cpu",
    precision: str = "fp32",
    resolutions: Sequence[int] | None = None,
    widths: Sequence[float] | None = None,
    protocol: Protocol = Protocol(),
    batch_size: int = 24,
    max_spread: float = 0.10,
    retries: int = 2,
    drift_check: int = 24,
    seed: int = 0,
    progress: bool = True,
) -> LatencyTable:
    """Measure every block of ``space`` not yet in ``out``; returns the finished table.

    ``resolutions`` and ``widths`` limit the build to some of the space's choices; the
    header keeps the whole space and records what is covered (``coverage``).

    An existing ``out`` must have been built for the same device, precision, threads,
    providers, ONNX Runtime version, opset and space, and, where blocks are left to
    measure, with the same ``protocol`` (TableMismatchError otherwise).
    Entries whose spread exceeds ``max_spread`` are re-measured up to ``retries`` times;
    the attempt with the lowest spread is kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    part = restrict_space(space, resolutions, widths)
    out = Path(out)
    table = _open_table(out, table_header(space, backend, device, precision), space, protocol, part)
    specs = table_specs(part)
    np.random.default_rng(seed).shuffle(specs)  # mix sizes within a batch
    build = _Build(table, out, backend, protocol)
    pending = build.todo(specs, max_spread, retries)
    build.protocol = _resume_protocol(table, out, pending, part, protocol)
    with progress_bar(
        total=len(pending), desc=f"lut {space.name} {precision}", unit="block", disable=not progress
    ) as bar:
        while pending:
            for i in range(0, len(pending), batch_size):
                build.record(pending[i : i + batch_size], bar)
            pending = build.todo(specs, max_spread, retries)
            bar.total += len(pending)
            bar.refresh()
        if drift_check and "drift" not in table.header:
            build.check_drift([s.key for s in specs], drift_check, bar)
    return table


def _resume_protocol(
    table: LatencyTable, out: Path, pending: list[BlockSpec], part: Space, protocol: Protocol
) -> Protocol:
    """The protocol to measure ``pending`` with: ``protocol``, or the table's own where only the classifier
    probes of a table finished before tables had them are pending; refused where the table was measured
    otherwise (a finished table is used as measured)."""
    measured_with = Protocol(**table.header["protocol"])
    if not pending or measured_with == protocol:
        return protocol
    if not set(pending) & set(part.all_block_specs()):
        return measured_with
    raise TableMismatchError(
        f"{str(out)!r} was measured with protocol {table.header['protocol']}; measuring its {len(pending)} "
        f"missing blocks with {protocol.to_dict()} would mix the two: resume it with its own protocol, or "
        "delete it to measure it anew"
    )


def _open_table(out: Path, header: dict[str, Any], space: Space, protocol: Protocol, part: Space) -> LatencyTable:
    """The table at ``out`` to resume (refused when measured otherwise) or a new one, covering ``part`` too."""
    if out.exists():
        table = LatencyTable.load(out, expect=header)
    else:
        table = LatencyTable(
            header={
                **header,
                "space_def": space.to_dict(),
                "protocol": protocol.to_dict(),
                "batches": [],
                "build_seconds": 0.0,
            }
        )
    if Space.from_dict(table.header["space_def"]) != space:
        raise TableMismatchError(f"{str(out)!r} was built for another definition of space {space.name!r}")
    # A resumed build may cover more resolutions/widths than the first run: keep the union.
    cov = table.header.get("coverage", {"resolutions": [], "widths": []})
    table.header["coverage"] = {
        "resolutions": sorted(set(cov["resolutions"]) | set(part.resolutions)),
        "widths": sorted(set(cov["widths"]) | set(part.widths)),
    }
    return table


class _Build:
    """One build of a table: measures batches of blocks, keeps each entry's best attempt, saves after each batch."""

    def __init__(self, table: LatencyTable, out: Path, backend: MeasurementBackend, protocol: Protocol):
        self.table, self.out, self.backend, self.protocol = table, out, backend, protocol
        self.precision, self.format = table.header["precision"], backend.format  # the device runtime's format
        self.reference, self.noop = reference_model(self.precision, self.format), noop_for(self.format)
        self.start = time.time()

    def todo(self, specs: list[BlockSpec], max_spread: float, retries: int) -> list[BlockSpec]:
        """Blocks without an entry, or whose entry is too noisy and has retries left."""
        entries = self.table.entries
        return [
            s
            for s in specs
            if entries.get(s.key) is None
            or (entries[s.key]["spread"] > max_spread and entries[s.key]["attempts"] <= retries)
        ]

    def measure(self, batch: list[BlockSpec], bar: Any) -> list:
        models = [block_model(spec, self.precision, self.format) for spec in batch]
        timings, ref, noop = self.backend.measure(models, self.reference, self.protocol, self.noop)
        self.table.header["batches"].append(
            {"reference_ms": ref.ms, "noop_rel": noop.rel, "noop_ms": noop.ms, "time": time.time()}
        )
        _aggregate(self.table.header)
        bar.update(len(batch))
        bar.set_postfix(ref_ms=f"{ref.ms:.3f}")
        return timings

    def record(self, batch: list[BlockSpec], bar: Any) -> None:
        """Measure ``batch``; an entry measured before keeps the attempt with the lower spread."""
        for spec, t in zip(batch, self.measure(batch, bar)):
            prev = self.table.entries.get(spec.key)
            entry = {"ms": t.ms, "rel": t.rel, "spread": t.spread, "runs": t.runs, "params": spec_params(spec)}
            entry["attempts"] = prev["attempts"] + 1 if prev else 1
            if prev is not None and prev["spread"] <= t.spread:
                entry = {**prev, "attempts": entry["attempts"]}
            self.table.entries[spec.key] = entry
        self.save()

    def check_drift(self, keys: list[str], n: int, bar: Any) -> None:
        """The first ``n`` entries measured again at the end: how far the device's speed moved during the build."""
        first = [k for k in keys if k in self.table.entries][:n]
        if bar.total is not None:
            bar.total += len(first)
        again = self.measure([BlockSpec.from_key(k) for k in first], bar)
        rel = [t.rel / self.table.entries[k]["rel"] - 1 for k, t in zip(first, again)]
        ms = [t.ms / self.table.entries[k]["ms"] - 1 for k, t in zip(first, again)]
        self.table.header["drift"] = {
            "n": len(first),
            "median_rel_change": float(np.median(rel)),
            "median_abs_rel_change": float(np.median(np.abs(rel))),
            "median_ms_change": float(np.median(ms)),
        }
        self.save()

    def save(self) -> None:
        self.table.header["build_seconds"] += time.time() - self.start
        self.start = time.time()
        self.table.save(self.out)
