"""Latency tables: per-device block timings, prediction, and validation against whole networks.

The timing side (``_runtimes``, ``_protocol``, ``_backend``, ``_table``) needs only numpy and the runtime,
so it runs on a device with nothing else installed. The building side exports models with
torch; its names are imported on first use (PEP 562), so ``import edgenas.latency_tables``
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgenas.latency_tables._backend import (
    PROVIDER_ALIASES,
    LocalBackend,
    MeasurementBackend,
    expected_providers,
    make_backend,
    make_runtime,
)
from edgenas.latency_tables._memory import session_peak_memory_mb
from edgenas.latency_tables._protocol import Protocol, Timing, time_models
from edgenas.latency_tables._runtimes import RUNTIMES, OnnxRuntime, OpenVino, Runtime, cpu_name
from edgenas.latency_tables._table import LatencyTable, TableMismatchError

_LAZY = {
    "AgentBackend": "_agent",
    "make_agent_server": "_agent",
    "serve_agent": "_agent",
    "build_table": "_build",
    "restrict_space": "_build",
    "Predictor": "_predict",
    "MissingEntryError": "_predict",
    "fit_calibration": "_predict",
    "validate_table": "_validate",
    "accuracy_metrics": "_validate",
    "sample_spread": "_validate",
    "arch_model": "_models",
    "block_model": "_models",
    "reference_model": "_models",
}

__all__ = [
    "PROVIDER_ALIASES",
    "RUNTIMES",
    "LatencyTable",
    "LocalBackend",
    "MeasurementBackend",
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
    "session_peak_memory_mb",
    "time_models",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
