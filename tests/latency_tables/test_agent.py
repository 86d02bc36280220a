"""The device agent on loopback: the backend contract, auth, limits, hostile input, resumed builds.

The same conformance checks run against every backend (in-process and agent).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from edgenas.latency_tables import (
    RUNTIMES,
    AgentBackend,
    AgentError,
    LatencyTable,
    LocalBackend,
    Protocol,
    make_backend,
)
from edgenas.latency_tables._models import block_model, noop_for, reference_model
from edgenas.search_spaces import BlockSpec
from tests._models import model_in

TOKEN = "s3cret-token-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_agent(port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenas.cli", "agent", "--port", str(port), "--token", TOKEN, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # "edgenas agent listening on http://127.0.0.1:PORT ..."
    assert "listening on" in line, proc.stderr.read()
    return proc


@pytest.fixture(scope="module")
def agent():
    port = _free_port()
    proc = _start_agent(port)
    yield f"agent://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agents():
    """Agents of the other runtimes (openvino, executorch, ncnn), started on first use, stopped with the module."""
    started: dict[str, tuple[subprocess.Popen, str]] = {}

    def get(runtime: str) -> str:
        if runtime not in started:
            port = _free_port()
            started[runtime] = (_start_agent(port, "--runtime", runtime), f"agent://127.0.0.1:{port}")
        return started[runtime][1]

    yield get
    for proc, _ in started.values():
        proc.terminate()
        proc.wait(timeout=10)


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# every backend present: each runtime in process and through the agent
RUNTIME_DEVICES = {"openvino": "openvino:CPU", "executorch": "executorch", "ncnn": "ncnn"}
BACKENDS = ["local", "agent", *(f"{where}{r}" for r in RUNTIME_DEVICES for where in ("", "agent-"))]


@pytest.fixture(params=BACKENDS)
def backend(request):
    runtime = request.param.removeprefix("agent-")
    if runtime in RUNTIME_DEVICES and not _installed(runtime):
        pytest.skip(f"{runtime} is not installed (pip install 'edgenas[{runtime}]'); its backends are not tested")
    if request.param == "local":
        return LocalBackend(threads=1)
    if request.param == "agent":
        return AgentBackend(request.getfixturevalue("agent"), token=TOKEN)
    if runtime == request.param:
        return make_backend(RUNTIME_DEVICES[runtime], threads=1)
    return AgentBackend(request.getfixturevalue("agents")(runtime), token=TOKEN)


SMALL = BlockSpec("ir", 16, 16, 16, 3, 1, 48, False, "relu6")
BIG = BlockSpec("ir", 16, 16, 64, 7, 1, 96, True, "relu6")


def test_backend_contract(backend):
    fp = backend.fingerprint()
    assert {"cpu", "runtime", "format", "onnxruntime", "providers", "threads"} <= set(fp)
    assert fp["runtime"].split()[0] in RUNTIMES and fp["threads"] == 1
    fmt = backend.format
    for precision in ("fp32", "int8") if fmt != "ncnn" else ("fp32",):  # ncnn's int8 tools are not in its package
        timings, ref, noop = backend.measure(
            [model_in(SMALL, precision, fmt), model_in(BIG, precision, fmt)],
            model_in(None, precision, fmt),
            Protocol(rounds=5),
            noop_for(fmt),
        )
        assert len(timings) == 2 and ref.rel == 1.0
        assert 0 < noop.ms < timings[0].ms < timings[1].ms, precision
    with pytest.raises(RuntimeError, match="could not run a model"):
        backend.measure([b"not a model"], model_in(None, "fp32", fmt), Protocol(rounds=3), noop_for(fmt))


def test_agent_matches_in_process_within_noise(agent):
    # Alternating runs and their medians: a burst of load on a shared machine during one run
    # (one CI failure: 2.02 through the agent vs 1.49 in process) moves neither median alone,
    # while an agent that times something else differs in every run.
    models = [block_model(BIG, "fp32")]
    ref = reference_model("fp32")
    backends = {"local": LocalBackend(threads=1), "agent": AgentBackend(agent, token=TOKEN)}
    rel: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(5):
        for name, backend in backends.items():
            rel[name].append(backend.measure(models, ref, Protocol(rounds=10))[0][0].rel)
    assert statistics.median(rel["agent"]) == pytest.approx(statistics.median(rel["local"]), rel=0.25), rel


def _post(url: str, body: bytes, token: str | None) -> tuple[int, dict, float]:
    req = urllib.request.Request(url.replace("agent://", "http://") + "/measure", data=body, method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    start = time.time()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), time.time() - start
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), time.time() - start


def _body(models: list[bytes]) -> bytes:
    return json.dumps(
        {
            "models": [base64.b64encode(m).decode() for m in models],
            "reference": base64.b64encode(reference_model("fp32")).decode(),
            "protocol": {"rounds": 20},
        }
    ).encode()


def test_requests_without_the_right_token_are_refused_and_run_nothing(agent):
    body = _body([block_model(BIG, "fp32")] * 8)  # would take seconds to time
    for token in (None, "wrong-token-value", TOKEN + "x"):
        status, payload, _ = _post(agent, body, token)
        assert status == 401 and "token" in payload["error"]  # nothing read beyond 1 MiB: see below
    with pytest.raises(AgentError, match="answered 401"):
        AgentBackend(agent, token="wrong-token-value").fingerprint()


def test_garbage_model_is_an_error_and_the_agent_keeps_serving(agent):
    status, payload, _ = _post(agent, _body([b"this is not an onnx model"]), TOKEN)
    assert status == 422 and "could not run a model" in payload["error"]
    status, payload, _ = _post(agent, b"{not json", TOKEN)
    assert status == 400 and "malformed request" in payload["error"]
    backend = AgentBackend(agent, token=TOKEN)
    assert backend.measure([block_model(SMALL, "fp32")], reference_model("fp32"), Protocol(rounds=3))[0][0].ms > 0


def test_oversized_body_is_refused():
    port = _free_port()
    proc = _start_agent(port, "--max-mb", "1")
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/measure")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()  # the body is never sent: the agent answers from the headers
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        assert resp.status == 413 and "exceeds the limit" in payload["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_killed_agent_mid_build_then_restart_resumes(tmp_path, monkeypatch):
    port = _free_port()
    out = tmp_path / "t.json"
    monkeypatch.setenv("EDGENAS_AGENT_TOKEN", TOKEN)
    cmd = [
        sys.executable,
        "-m",
        "edgenas.cli",
        "lut",
        "build",
        "--space",
        "tiny",
        "--resolutions",
        "24",
        "--device",
        f"agent://127.0.0.1:{port}",
        "--rounds",
        "4",
        "--batch-size",
        "6",
        "--quiet",
        "--out",
        str(out),
    ]
    agent = _start_agent(port)
    build = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:
        time.sleep(0.05)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    _, err = build.communicate(timeout=120)
    assert build.returncode != 0 and "unreachable" in err  # the client retried, then gave up cleanly
    partial = LatencyTable.load(out)
    assert 0 < len(partial.entries) < 76
    agent = _start_agent(port)
    try:
        subprocess.run(cmd, check=True)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    full = LatencyTable.load(out)
    assert len(full.entries) == 76  # tiny at 24 px (two hidden widths), and its classifiers' probed hidden widths
    kept = [k for k, e in partial.entries.items() if e["spread"] <= 0.10]
    assert all(full.entries[k]["ms"] == partial.entries[k]["ms"] for k in kept)


def _headers_only_post(port: int, token: str, length: int):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/measure")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()  # the body is never sent: the agent must answer from the headers
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_an_unauthorised_body_is_not_read():
    """A wrong token with a large body within the size limit: 401 from the headers, not after reading 100 MB."""
    port = _free_port()
    proc = _start_agent(port)
    try:
        status, payload = _headers_only_post(port, "wrong-token-value", 100 * 1024 * 1024)
        assert status == 401 and "token" in payload["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_connections_beyond_the_cap_get_503():
    import threading

    from edgenas.latency_tables._agent import make_agent_server

    server = make_agent_server(token=TOKEN, max_connections=2, request_timeout=30)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]  # hold both slots
        time.sleep(0.5)  # let the server accept them
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/fingerprint"), timeout=30)
        for s in idle:
            s.close()
        time.sleep(0.5)
        backend = AgentBackend(f"http://127.0.0.1:{port}", token=TOKEN)
        assert backend.fingerprint()["threads"] == 1  # slots freed: served again
    finally:
        server.shutdown()
        server.server_close()


def test_agent_errors_are_one_line_and_exit_2(tmp_path, agent):
    out = tmp_path / "t.json"
    for device, token, fragment in (
        (agent, "wrong-token-value", "answered 401"),
        ("agent://127.0.0.1:1", TOKEN, "unreachable"),
    ):
        cmd = ["lut", "build", "--space", "tiny", "--device", device, "--token", token, "--out", str(out), "--quiet"]
        r = subprocess.run([sys.executable, "-m", "edgenas.cli", *cmd], capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
        assert not out.exists()
