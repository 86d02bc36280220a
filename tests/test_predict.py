"""`edgenas predict`: a finalized model run with ONNX Runtime alone, from the metadata it carries."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from edgenas.preprocess import read_metadata

ARCH = "r16|k3e2|k3e3se"


@pytest.fixture(scope="module")
def finalized(tiny_run, tmp_path_factory):
    from edgenas import pipeline
    from edgenas.config import load_config

    run = tmp_path_factory.mktemp("predict_run")
    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(run)
    data["finalize"] = {
        "distill_epochs": 1,
        "prune": {"max_steps": 0},
        "qat": "always",  # the QAT int8 file is one of those predicted
        "qat_epochs": 1,
        "measure_rounds": 3,
        "accept_failed_checks": True,
    }
    shutil.copy(tiny_run.parent / "supernet.pt", run / "supernet.pt")
    (run / "c.yaml").write_text(yaml.safe_dump(data))
    card = pipeline.finalize(load_config(run / "c.yaml"), archs={"cpu": ARCH}, progress=False)["cpu"]
    return run / "finalize" / "cpu", card


def test_every_export_carries_its_preprocessing_and_classes(finalized):
    out, card = finalized
    for name in ("pruned", "qat_int8", "ptq_int8"):
        meta = read_metadata(str(out / f"{name}.onnx"))
        assert meta["arch"] == ARCH and meta["space"] == "tiny" and meta["classes"] == [str(d) for d in range(10)]
        assert meta["input"]["resolution"] == 16 and meta["input"]["channels"] == 1
        assert 0 < meta["input"]["mean"] < 1 and meta["input"]["std"] > 0
        assert meta["data"]["name"] == "digits" and meta["data"]["seed"] == 0
    assert read_metadata(str(out / "teacher.onnx"))["input"]["resolution"] == 24  # the teacher's own input


def _predict(*args: str) -> subprocess.CompletedProcess:
    """edgenas predict in a fresh process that must not import torch."""
    code = (
        "import sys\nfrom edgenas.cli import main\nrc = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'predict imported torch'\nsys.exit(rc)"
    )
    return subprocess.run([sys.executable, "-c", code, "predict", *args], capture_output=True, text=True)


def test_predict_reproduces_the_cards_test_accuracy_without_torch(finalized):
    out, card = finalized
    by = {s["stage"]: s for s in card["stages"]}
    for name in ("pruned", "qat_int8"):
        r = _predict(str(out / f"{name}.onnx"), "digits")
        assert r.returncode == 0, r.stderr
        assert "test split" in r.stdout
        acc = float(r.stdout.split("accuracy")[1].split("%")[0]) / 100
        assert abs(acc - by[name]["test_accuracy"]) <= 0.001, (name, acc, by[name]["test_accuracy"])


def test_predict_on_image_files(finalized, tmp_path):
    from sklearn.datasets import load_digits

    out, _ = finalized
    digits = load_digits()
    for i in range(2):
        img = (digits.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(img).resize((16, 16)).convert("RGB").save(tmp_path / f"d{i}.png")  # RGB: mapped to gray
    r = _predict(str(out / "qat_int8.onnx"), str(tmp_path), "--top", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(ln.count("%") == 2 for ln in lines)
    r = _predict(str(out / "qat_int8.onnx"), str(tmp_path / "d0.png"))
    assert r.returncode == 0 and r.stdout.count("%") == 3


def test_a_model_without_metadata_is_one_line(tmp_path, tiny):
    from edgenas.export import export_onnx
    from edgenas.search_spaces import Arch, build_subnet

    net = build_subnet(tiny, Arch.parse(ARCH))
    export_onnx(net, net.input_shape, tmp_path / "bare.onnx")
    r = _predict(str(tmp_path / "bare.onnx"), "digits")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "carries no edgenas metadata" in r.stderr


def test_an_openvino_ir_carries_its_metadata_and_predict_runs_it_without_torch(finalized, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgenas[openvino]')")
    from edgenas.export import save_openvino_ir

    out, card = finalized
    by = {s["stage"]: s for s in card["stages"]}
    for name in ("pruned", "qat_int8"):
        xml = save_openvino_ir((out / f"{name}.onnx").read_bytes(), tmp_path / f"{name}.xml")
        assert xml.with_suffix(".bin").exists()
        assert read_metadata(str(xml)) == read_metadata(str(out / f"{name}.onnx"))
        r = _predict(str(xml), "digits")
        assert r.returncode == 0, r.stderr
        acc = float(r.stdout.split("accuracy")[1].split("%")[0]) / 100
        # fp32: the same arithmetic; int8: OpenVINO's integer kernels round some near-ties differently
        assert abs(acc - by[name]["test_accuracy"]) <= (0.001 if name == "pruned" else 0.02), (name, acc)
