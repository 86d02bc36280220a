"""Measurement backends: where timings come from. Standard library, numpy and the runtimes only.

A backend is "a runtime (:mod:`._runtimes`: ONNX Runtime with a set of execution
providers, or OpenVINO on a device), somewhere": in this process (:class:`LocalBackend`)
or behind an ``edgenas agent`` on the device (:class:`AgentBackend`, its HTTP client; the
server is :mod:`._agent`).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from edgenas.latency_tables._protocol import Protocol, Timing, time_models
from edgenas.latency_tables._runtimes import Runtime, make_runtime

__all__ = ["TOKEN_ENV", "AgentBackend", "AgentError", "LocalBackend", "MeasurementBackend", "make_backend"]


class MeasurementBackend(ABC):
    """Times ONNX models on one device.

    Contract: :meth:`measure` times ``models`` interleaved with ``reference`` (and ``noop``,
    the per-call overhead model; ONNX's by default) under ``protocol``, all in the device
    runtime's :attr:`format`, and returns (timings in the order of ``models``, reference timing, no-op
    timing); it raises ``RuntimeError`` when the device cannot load or run a model. Calls are
    serialised by the caller (one batch at a time per device: concurrent batches would
    disturb each other's timings). :meth:`fingerprint` describes the device and the
    session settings; it goes into every table header.
    """

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]: ...

    @property
    def format(self) -> str:
        """The model format the device's runtime loads (an agent of an earlier version ran ONNX)."""
        return self.fingerprint().get("format", "onnx")

    @abstractmethod
    def measure(
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol, noop: bytes | None = None
    ) -> tuple[list[Timing], Timing, Timing]: ...


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
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol, noop: bytes | None = None
    ) -> tuple[list[Timing], Timing, Timing]:
        try:
            return time_models(models, reference, runtime=self.runtime, protocol=protocol, noop=noop)
        except Exception as exc:  # the runtimes raise their own exception types
            raise RuntimeError(f"{self.runtime.name} could not run a model: {exc}") from exc


def make_backend(
    device: str, *, threads: int = 1, providers: Sequence[str] = ("cpu",), token: str | None = None
) -> MeasurementBackend:
    """A backend from a device name.

    ``local-cpu`` (or ``local`` with ``providers``) runs ONNX Runtime in this process;
    ``openvino`` / ``openvino:CPU|GPU|NPU`` runs OpenVINO, ``executorch`` ExecuTorch with
    XNNPACK and ``ncnn`` ncnn, in this process;
    ``agent://HOST:PORT`` measures on an ``edgenas agent`` (token from ``token`` or the
    EDGENAS_AGENT_TOKEN environment variable; runtime, threads and providers are the agent's).
    """
    if device.startswith("agent://"):
        return AgentBackend(device, token=token)
    return LocalBackend(runtime=make_runtime(device, threads=threads, providers=providers), threads=threads)


TOKEN_ENV = "EDGENAS_AGENT_TOKEN"


class AgentError(RuntimeError):
    """The agent refused or failed a request."""


class AgentBackend(MeasurementBackend):
    """Measures on a remote ``edgenas agent``; retries dropped connections."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 900.0, retries: int = 3):
        if url.startswith("agent://"):
            url = "http://" + url[len("agent://") :]
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV)
        if not self.token:
            raise ValueError(f"agent {url}: no token; pass --token or set {TOKEN_ENV}")
        self.timeout = timeout
        self.retries = retries
        self._fingerprint: dict[str, Any] | None = None

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:  # the agent answered: do not retry
                try:
                    msg = json.loads(exc.read()).get("error", "")
                except Exception:
                    msg = ""
                raise AgentError(f"agent {self.url} answered {exc.code}: {msg or exc.reason}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
                if attempt < self.retries:
                    time.sleep(min(2.0**attempt, 10.0))
        raise AgentError(f"agent {self.url} unreachable after {self.retries + 1} attempts: {last}")

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = self._call("GET", "/fingerprint")
        return self._fingerprint

    def measure(
        self, models: Sequence[bytes], reference: bytes, protocol: Protocol, noop: bytes | None = None
    ) -> tuple[list[Timing], Timing, Timing]:
        payload = {
            "models": [base64.b64encode(m).decode() for m in models],
            "reference": base64.b64encode(reference).decode(),
            "protocol": protocol.to_dict(),
        }
        if noop is not None:
            payload["noop"] = base64.b64encode(noop).decode()
        self.fingerprint()  # a wrong token or URL shows on this small GET, before a large body is sent
        out = self._call("POST", "/measure", payload)  # AgentError is the RuntimeError the contract names
        return [Timing(**t) for t in out["timings"]], Timing(**out["reference"]), Timing(**out["noop"])
