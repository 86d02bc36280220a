"""Measurement backends: where timings come from. Needs only numpy and onnxruntime.

A backend is "an ONNX Runtime session with a set of execution providers, somewhere". The
in-process one lives here; the remote device agent implements the same contract.
"""

from __future__ import annotations

import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from edgenas.latency_tables._protocol import Protocol, Timing, time_models

__all__ = ["LocalBackend", "MeasurementBackend", "PROVIDER_ALIASES", "cpu_name", "make_backend", "resolve_providers"]

# Short names accepted on the command line for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


class MeasurementBackend(ABC):
    """Times ONNX models on one device.

    Contract: :meth:`measure` times ``models`` interleaved with ``reference`` under
    ``protocol`` and returns (timings in the order of ``models``, reference timing, no-op
    timing); it raises ``RuntimeError`` when the device cannot load or run a model. Calls are
    serialised by the caller (one batch at a time per device: concurrent batches would
    disturb each other's timings). :meth:`fingerprint` describes the device and the
    session settings; it goes into every table header.
    """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]: ...

    @abstractmethod
    def measure(
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol
    ) -> tuple[list[Timing], Timing, Timing]: ...


def resolve_providers(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """Map short or full provider names to ONNX Runtime's, refusing unavailable ones."""
    out = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ValueError(
                f"execution provider {name!r} is not available here; available: {list(available)} "
                f"(short names: {sorted(PROVIDER_ALIASES)})"
            )
        out.append(full)
    if not out:
        raise ValueError(f"at least one execution provider is needed; available: {list(available)}")
    return out


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(providers: Sequence[str], threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "onnxruntime": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "providers": list(providers),
        "threads": threads,
    }


class LocalBackend(MeasurementBackend):
    """ONNX Runtime in this process."""

    def __init__(self, *, providers: Sequence[str] = ("cpu",), threads: int = 1):
        import onnxruntime as ort

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.providers = resolve_providers(providers, ort.get_available_providers())
        self.threads = threads

    def fingerprint(self) -> dict[str, Any]:
        return device_fingerprint(self.providers, self.threads)

    def measure(
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol
    ) -> tuple[list[Timing], Timing, Timing]:
        try:
            return time_models(models, reference, providers=self.providers, threads=self.threads, protocol=protocol)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise RuntimeError(f"ONNX Runtime could not run a model: {exc}") from exc


def make_backend(
    device: str, *, threads: int = 1, providers: Sequence[str] = ("cpu",), token: str | None = None
) -> MeasurementBackend:
    """A backend from a device name.

    ``local-cpu`` (or ``local`` with ``providers``) runs ONNX Runtime in this process;
    ``agent://HOST:PORT`` measures on an ``edgenas agent`` (token from ``token`` or the
    EDGENAS_AGENT_TOKEN environment variable; threads and providers are the agent's).
    """
    if device in ("local-cpu", "local"):
        return LocalBackend(providers=providers if device == "local" else ("cpu",), threads=threads)
    if device.startswith("agent://"):
        from edgenas.latency_tables._agent import AgentBackend

        return AgentBackend(device, token=token)
    raise ValueError(f"unknown device {device!r}; allowed: 'local-cpu', 'local' (with --providers), 'agent://HOST:PORT'")
