"""Latency tables: per-device block timings, prediction, and validation against whole networks.

The timing side (``_runtimes``: ONNX Runtime, OpenVINO, ExecuTorch, ncnn; ``_protocol``,
``_backend``, ``_agent``, ``_table``) needs only numpy and the runtime, so it runs on a device
with nothing else installed. The building side exports models with torch; its names are
imported on first use (PEP 562), so ``import edgenas.latency_tables`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgenas.latency_tables._backend import (
    TOKEN_ENV,
    AgentBackend,
    AgentError,
    LocalBackend,
    MeasurementBackend,
    make_backend,
)
from edgenas.latency_tables._memory import session_peak_memory_mb
from edgenas.latency_tables._placement import placement, placement_summary
from edgenas.latency_tables._protocol import Protocol, Timing, noop_model, time_models
from edgenas.latency_tables._runtimes import (
    DEVICES,
    FORMATS,
    PROVIDER_ALIASES,
    RUNTIMES,
    CoreML,
    ExecuTorch,
    Ncnn,
    OnnxRuntime,
    OpenVino,
    Runtime,
    cpu_name,
    expected_providers,
    make_runtime,
    resolve_providers,
)
from edgenas.latency_tables._table import LatencyTable, TableMismatchError

_LAZY = {
    "make_agent_server": "_agent",
    "serve_agent": "_agent",
    "build_table": "_build",
    "restrict_space": "_build",
    "table_specs": "_build",
    "Predictor": "_predict",
    "MissingEntryError": "_predict",
    "fit_calibration": "_predict",
    "validate_table": "_validate",
    "accuracy_metrics": "_validate",
    "sample_spread": "_validate",
    "arch_model": "_models",
    "block_model": "_models",
    "pruned_arch_model": "_models",
    "reference_model": "_models",
    "noop_for": "_models",
}

__all__ = [
    "DEVICES",
    "PROVIDER_ALIASES",
    "TOKEN_ENV",
    "AgentBackend",
    "AgentError",
    "CoreML",
    "FORMATS",
    "RUNTIMES",
    "ExecuTorch",
    "LatencyTable",
    "LocalBackend",
    "MeasurementBackend",
    "Ncnn",
    "OnnxRuntime",
    "OpenVino",
    "Protocol",
    "Runtime",
    "TableMismatchError",
    "Timing",
    "cpu_name",
    "expected_providers",
    "make_backend",
    "make_runtime",
    "noop_model",
    "placement",
    "placement_summary",
    "resolve_providers",
    "session_peak_memory_mb",
    "time_models",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
