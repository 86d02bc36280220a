"""The agent as a device installs it: a fresh virtual environment with numpy, ONNX Runtime and
edgenas without its dependencies (no torch, no onnx), started by the documented command, timing
what the host sends as in-process measurement does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from edgenas.latency_tables import AgentBackend, LocalBackend, Protocol
from edgenas.latency_tables._models import block_model, reference_model
from edgenas.search_spaces import BlockSpec

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fresh-venv-agent-token"
BIG = BlockSpec("ir", 16, 16, 64, 7, 1, 96, True, "relu6")


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    """A venv holding what docs/devices.md installs on a device: numpy, onnxruntime, edgenas --no-deps."""
    tmp = tmp_path_factory.mktemp("device")
    # the wheel of this checkout, as `pip wheel --no-deps .` makes it on the host
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", ROOT)
    wheel = next((tmp / "dist").glob("edgenas-*.whl"))
    venv = tmp / "agent"
    _run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(*pip, f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}")  # as the host has them
    _run(*pip, "--no-deps", wheel)
    return venv


def test_the_agent_installs_without_torch_or_onnx_and_times_as_in_process(device_venv):
    python = device_venv / "bin" / "python"
    missing = _run(python, "-c", "import importlib.util as u; print([m for m in ('torch', 'onnx') if u.find_spec(m)])")
    assert missing.stdout.strip() == "[]"  # a device without them
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EDGENAS_AGENT_TOKEN": TOKEN, "PYTHONPATH": ""}
    agent = subprocess.Popen(
        [device_venv / "bin" / "edgenas", "agent", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=device_venv,  # not the checkout: the installed package runs
    )
    try:
        line = agent.stdout.readline()
        assert "listening on" in line, agent.stderr.read()
        remote = AgentBackend(f"agent://127.0.0.1:{port}", token=TOKEN)
        assert remote.fingerprint()["runtime"] == f"onnxruntime {version('onnxruntime')}"
        models, ref = [block_model(BIG, "fp32")], reference_model("fp32")
        there = remote.measure(models, ref, Protocol(rounds=10))[0][0]
        here = LocalBackend(threads=1).measure(models, ref, Protocol(rounds=10))[0][0]
        assert there.rel == pytest.approx(here.rel, rel=0.25)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
