"""Measurement backends: where timings come from. Needs only numpy and the runtimes.

A backend is "a runtime (:mod:`._runtimes`: ONNX Runtime with a set of execution
providers, or OpenVINO on a device), somewhere". The in-process one lives here; the remote
device agent implements the same contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from edgenas.latency_tables._protocol import Protocol, Timing, time_models
from edgenas.latency_tables._runtimes import OnnxRuntime, OpenVino, Runtime, openvino_device

__all__ = [
    "DEVICES",
    "PROVIDER_ALIASES",
    "LocalBackend",
    "MeasurementBackend",
    "expected_providers",
    "make_backend",
    "make_runtime",
    "resolve_providers",
]

DEVICES = "'local-cpu', 'local' (with providers), 'openvino[:CPU|GPU|NPU]', 'agent://HOST:PORT'"

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


class LocalBackend(MeasurementBackend):
    """A runtime in this process: ONNX Runtime with ``providers`` (default), or ``runtime`` (e.g. OpenVINO)."""

    def __init__(self, *, providers: Sequence[str] = ("cpu",), threads: int = 1, runtime: Runtime | None = None):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.runtime = runtime or make_runtime("local", threads=threads, providers=providers)
        self.providers, self.threads = self.runtime.providers, self.runtime.threads

    def fingerprint(self) -> dict[str, Any]:
        return self.runtime.fingerprint()

    def measure(
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol
    ) -> tuple[list[Timing], Timing, Timing]:
        try:
            return time_models(models, reference, runtime=self.runtime, protocol=protocol)
        except Exception as exc:  # the runtimes raise their own exception types
            raise RuntimeError(f"{self.runtime.name} could not run a model: {exc}") from exc


def make_runtime(device: str, *, threads: int = 1, providers: Sequence[str] = ("cpu",)) -> Runtime:
    """The in-process runtime of a device string: ``local-cpu``, ``local`` (with ``providers``),
    ``openvino`` or ``openvino:CPU|GPU|NPU``."""
    import onnxruntime as ort

    if device in ("local-cpu", "local"):
        chosen = providers if device == "local" else ("cpu",)
        return OnnxRuntime(resolve_providers(chosen, ort.get_available_providers()), threads)
    if _is_openvino(device):
        return OpenVino(openvino_device(device), threads)
    raise ValueError(f"unknown device {device!r}; allowed: {DEVICES}")


def _is_openvino(device: str) -> bool:
    return device == "openvino" or device.startswith("openvino:")


def expected_providers(device: str, providers: Sequence[str]) -> list[str]:
    """What a table measured on ``device`` records as its providers (for checking a table against a config)."""
    if _is_openvino(device):
        return [openvino_device(device)]
    return [PROVIDER_ALIASES.get(p.lower(), p) for p in (providers if device == "local" else ("cpu",))]


def make_backend(
    device: str, *, threads: int = 1, providers: Sequence[str] = ("cpu",), token: str | None = None
) -> MeasurementBackend:
    """A backend from a device name.

    ``local-cpu`` (or ``local`` with ``providers``) runs ONNX Runtime in this process;
    ``openvino`` / ``openvino:CPU|GPU|NPU`` runs OpenVINO in this process;
    ``agent://HOST:PORT`` measures on an ``edgenas agent`` (token from ``token`` or the
    EDGENAS_AGENT_TOKEN environment variable; runtime, threads and providers are the agent's).
    """
    if device.startswith("agent://"):
        from edgenas.latency_tables._agent import AgentBackend

        return AgentBackend(device, token=token)
    return LocalBackend(runtime=make_runtime(device, threads=threads, providers=providers), threads=threads)
