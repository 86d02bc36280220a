"""The command line: every command runs, bad input gives one line and exit 2."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import onnxruntime as ort
import pytest

from edgenas.cli import build_parser, main
from edgenas.latency_tables import LatencyTable, arch_model
from edgenas.search_spaces import Arch, get_space


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgenas.cli", *args], capture_output=True, text=True)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser, e.g. ("lut", "build")."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [path]
    return [p for name, sub in subs[0].choices.items() for p in _commands(sub, (*path, name))]


def test_help_for_every_command(capsys):
    commands = _commands(build_parser())
    assert {("lut", "build"), ("arch", "export"), ("run",), ("agent",), ("report",)} <= set(commands)
    for path in [(), *commands]:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith(f"usage: edgenas {' '.join(path)}".rstrip()), path
        assert len(out.splitlines()) > 3, path  # a description or options, not just the usage line
    r = _cli("--help")  # and as installed, in a fresh process
    assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["arch", "sample", "--space", "nope"], "unknown space 'nope'"),
        (["arch", "sample", "--space", "tiny", "--n", "0"], "expected a positive integer"),
        (["arch", "info", "r16|k3e9|k3e2", "--space", "tiny"], "expand 9 not in"),
        (["arch", "info", "r16|k3e2|x", "--space", "tiny"], "malformed block token 'x'"),
        (["lut", "build", "--space", "tiny", "--precision", "fp8", "--out", "x.json"], "invalid choice: 'fp8'"),
        (["lut", "build", "--space", "tiny", "--device", "phone", "--out", "x.json"], "unknown device 'phone'"),
        (["lut", "build", "--space", "tiny", "--resolutions", "99", "--out", "x.json"], "resolution 99 is not in"),
        (["lut", "show", "missing.json"], "does not exist"),
        (["train", "--config", "c.yaml", "--torch-device", "gpu"], "must be one of auto, cpu, cuda, cuda:N, mps"),
        (["run", "c.yaml", "--torch-device", "cuda:x"], "'cuda:x'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgenas.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgenas: error:") and fragment in lines[0], r.stderr
    assert not (tmp_path / "x.json").exists()


def test_sample_info_export_predict_show(tiny_table, tmp_path, capsys):
    assert main(["arch", "sample", "--space", "tiny", "--n", "3", "--seed", "4"]) == 0
    archs = capsys.readouterr().out.split()
    assert len(archs) == 3
    arch = "r16|k3e2-k5e3se|k3e2"
    assert main(["arch", "info", arch, "--space", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == arch and info["params"] > 0 and len(info["blocks"]) == 7
    out = tmp_path / "m.onnx"
    assert main(["arch", "export", arch, "--space", "tiny", "--out", str(out), "--precision", "int8"]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 1, 16, 16]
    assert out.read_bytes() == arch_model(get_space("tiny"), Arch.parse(arch), "int8")  # what validation times
    assert "check a table's prediction" in capsys.readouterr().out
    assert main(["arch", "predict", arch, "--lut", str(tiny_table)]) == 0
    assert float(capsys.readouterr().out.strip()) > 0
    assert main(["lut", "show", str(tiny_table)]) == 0
    shown = capsys.readouterr().out
    assert "M parameters" in shown  # the range the calibration was fitted on
    assert "pruned      blocks priced with channels rounded up to" in shown  # how a pruned block is priced
    # an arch beyond the calibration's archs: the number on stdout, the warning on stderr
    narrow = LatencyTable.load(tiny_table)
    narrow.calibration = {**narrow.calibration, "params_range": [0.0, 1e-4]}
    narrow.save(tmp_path / "narrow.json")
    assert main(["arch", "predict", arch, "--lut", str(tmp_path / "narrow.json")]) == 0
    captured = capsys.readouterr()
    assert float(captured.out.strip()) > 0 and "extrapolated" in captured.err


def test_validate_command_writes_report(tiny_table, tmp_path):
    table = tmp_path / "t.json"
    shutil.copy(tiny_table, table)
    report = tmp_path / "r.json"
    r = _cli("lut", "validate", str(table), "--n", "16", "--out", str(report), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "held-out subnets" in r.stdout
    assert json.loads(report.read_text())["n_heldout"] == 8
