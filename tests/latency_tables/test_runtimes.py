"""Runtimes beside ONNX Runtime: OpenVINO tables, device strings, and what a missing runtime says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgenas.latency_tables import LatencyTable, Protocol, TableMismatchError, build_table, make_backend
from edgenas.latency_tables._runtimes import openvino_device


def _need_openvino():
    try:
        import openvino  # noqa: F401
    except ImportError:
        pytest.skip("OpenVINO is not installed (pip install 'edgenas[openvino]')")


def test_openvino_device_strings():
    assert openvino_device("openvino") == "CPU" and openvino_device("openvino:npu") == "NPU"
    assert openvino_device("openvino:GPU.1") == "GPU.1"
    with pytest.raises(ValueError, match=r"unknown OpenVINO device 'TPU' in 'openvino:tpu'; allowed: openvino:CPU"):
        openvino_device("openvino:tpu")
    with pytest.raises(ValueError, match=r"unknown device 'vino'; allowed: 'local-cpu'.*'openvino\[:CPU\|GPU\|NPU\]'"):
        make_backend("vino")


def test_a_missing_openvino_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(RuntimeError, match=r"^OpenVINO is not installed: pip install 'edgenas\[openvino\]'"):
        make_backend("openvino:CPU")


def test_an_openvino_table_names_its_runtime_and_is_not_mixed_with_onnxruntime(tiny, tmp_path):
    _need_openvino()
    import openvino

    path = tmp_path / "ov.json"
    backend = make_backend("openvino:CPU", threads=1)
    table = build_table(
        tiny,
        backend,
        path,
        device="openvino:CPU",
        resolutions=[16],
        widths=[0.5],
        protocol=Protocol(rounds=3),
        progress=False,
        drift_check=4,
    )
    h = table.header
    assert h["runtime"] == f"openvino {openvino.__version__.split('-')[0]}" and h["providers"] == ["CPU"]
    assert h["device"] == "openvino:CPU" and len(table.entries) > 10
    assert all(e["ms"] > 0 for e in table.entries.values())
    # resuming this build with ONNX Runtime is refused: another runtime's costs
    with pytest.raises(TableMismatchError, match="runtime: table has 'openvino"):
        build_table(
            tiny, make_backend("local-cpu"), path, device="openvino:CPU", resolutions=[16], widths=[0.5], progress=False
        )
    assert LatencyTable.load(path).header["runtime"].startswith("openvino")


def test_a_table_of_an_earlier_version_reads_as_onnxruntime(tiny_table, tmp_path):
    import json

    data = json.loads(tiny_table.read_text())
    data["header"].pop("runtime", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert LatencyTable.load(old).header["runtime"] == f"onnxruntime {data['header']['onnxruntime']}"


def test_cli_lut_build_with_a_bad_openvino_device_is_one_line_exit_2(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas.cli",
            "lut",
            "build",
            "--space",
            "tiny",
            "--device",
            "openvino:tpu",
            "--out",
            str(tmp_path / "t.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "unknown OpenVINO device 'TPU'" in r.stderr
