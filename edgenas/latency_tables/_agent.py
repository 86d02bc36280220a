"""The device agent (``edgenas agent``). Standard library, numpy and the runtime only.

The agent runs on the target device and times ONNX models sent to it with the same
protocol as in-process measurement::

    GET  /fingerprint   -> {"cpu": ..., "onnxruntime": ..., "available_providers": [...], ...}
    POST /measure       <- {"models": [b64, ...], "reference": b64, "protocol": {...}, "noop": b64}
                        -> {"timings": [...], "reference": {...}, "noop": {...}}

The models are in the format of the agent's runtime (``format`` in its fingerprint: ONNX,
an ExecuTorch ``.pte``, an ncnn zip); ``noop`` (the per-call overhead model) may be left out
for ONNX runtimes, which keep their own.

Every request needs ``Authorization: Bearer <token>`` (compared in constant time), else
401 and nothing runs; an unauthorised body is not read beyond 1 MiB. Bodies over the size
limit are refused (413) before they are read, and connections beyond ``max_connections``
open at once get a 503.
A model the runtime cannot load or run gets a 422 with the error; the agent keeps serving.
Requests are handled on their own threads but measured one at a time (a lock), so timings
never overlap. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgenas.latency_tables._protocol import Protocol, time_models
from edgenas.latency_tables._runtimes import RUNTIMES, Runtime, make_runtime

__all__ = ["make_agent_server", "serve_agent"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 8
UNAUTHORISED_READ = 1024 * 1024  # a refused client's body is read this far (so it sees the 401), no further


def make_agent_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str,
    providers: Sequence[str] = ("cpu",),
    threads: int = 1,
    runtime: str = "onnxruntime",
    ov_device: str = "CPU",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = 600.0,
) -> ThreadingHTTPServer:
    """An HTTP server ready to ``serve_forever()``; ``server.server_address`` has the bound port.

    ``runtime``: ``onnxruntime`` (with ``providers``), ``openvino`` (on ``ov_device``),
    ``executorch`` (XNNPACK) or ``ncnn``.
    """
    if not token or len(token) < 8:
        raise ValueError("the agent token must be at least 8 characters")
    if max_connections < 1:
        raise ValueError(f"the agent needs max_connections >= 1, got {max_connections}")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; allowed: {RUNTIMES}")
    device = {"openvino": f"openvino:{ov_device}", "onnxruntime": "local"}.get(runtime, runtime)

    settings = {
        "timeout": request_timeout,
        "runtime": make_runtime(device, threads=threads, providers=providers),
        "lock": threading.Lock(),  # one measurement at a time: concurrent timings would disturb each other
        "expected": f"Bearer {token}".encode(),
        "max_bytes": max_bytes,
    }
    handler = type("Handler", (_Handler,), settings)
    return _CappedServer((host, port), handler, max_connections)


class _Handler(BaseHTTPRequestHandler):
    """The agent's requests; the server it serves sets ``runtime``, ``lock``, ``expected`` and ``max_bytes``."""

    protocol_version = "HTTP/1.1"
    runtime: Runtime
    lock: threading.Lock
    expected: bytes
    max_bytes: int

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; errors go in responses
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, self.expected):
            return True
        self._discard_body()  # read (never parse) a small body, so the client sees the 401
        self.close_connection = True
        self._send(401, {"error": "missing or wrong token"})
        return False

    def _discard_body(self) -> None:
        try:
            left = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if left > UNAUTHORISED_READ:  # answer from the headers alone and close
            return
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

    def do_GET(self) -> None:  # http.server's naming
        if not self._authorised():
            return
        if self.path != "/fingerprint":
            self._send(404, {"error": f"unknown path {self.path!r}; GET /fingerprint, POST /measure"})
            return
        self._send(200, self.runtime.fingerprint())

    def do_POST(self) -> None:
        if not self._authorised():
            return
        if self.path != "/measure":
            self.close_connection = True
            self._send(404, {"error": f"unknown path {self.path!r}; GET /fingerprint, POST /measure"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._send(411, {"error": "Content-Length required"})
            return
        if length > self.max_bytes:
            self.close_connection = True
            self._send(413, {"error": f"request of {length} bytes exceeds the limit of {self.max_bytes}"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            models = [base64.b64decode(m) for m in request["models"]]
            reference = base64.b64decode(request["reference"])
            protocol = Protocol(**request.get("protocol", {}))
            noop = base64.b64decode(request["noop"]) if "noop" in request else None
        except Exception as exc:  # malformed request of any kind
            self._send(400, {"error": f"malformed request: {exc}"})
            return
        try:
            with self.lock:  # one measurement at a time: concurrent timings would disturb each other
                timings, ref, idle = time_models(models, reference, runtime=self.runtime, protocol=protocol, noop=noop)
        except Exception as exc:  # the runtime could not load or run a model
            self._send(422, {"error": f"could not run a model: {exc}"})
            return
        self._send(200, {"timings": [asdict(t) for t in timings], "reference": asdict(ref), "noop": asdict(idle)})


class _CappedServer(ThreadingHTTPServer):
    """A threading HTTP server that answers 503 to connections beyond ``max_connections``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:  # socketserver's signature
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "too many connections; try again later"}).encode()
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve_agent(**kwargs: Any) -> None:
    """Run the agent until interrupted (see :func:`make_agent_server` for the arguments)."""
    server = make_agent_server(**kwargs)
    host, port = server.server_address[:2]
    runtime = kwargs.get("runtime", "onnxruntime")
    ov, ort = kwargs.get("ov_device", "CPU"), kwargs.get("providers")
    where = {"openvino": f"device {ov}", "onnxruntime": f"providers {ort}"}.get(runtime, "CPU")
    print(
        f"edgenas agent listening on http://{host}:{port} ({runtime}, {where}, threads {kwargs.get('threads', 1)})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
