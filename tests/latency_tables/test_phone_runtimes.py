"""The phone runtimes (ExecuTorch with XNNPACK, ncnn): each runs its own format as torch computes it,
tables are built and validated in that format, and what cannot be done says so in one line."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from edgenas.latency_tables import (
    LatencyTable,
    Protocol,
    build_table,
    make_backend,
    make_runtime,
    noop_for,
    reference_model,
    table_specs,
    time_models,
    validate_table,
)
from edgenas.search_spaces import Space
from tests._models import model_in

# one stage, two kernels, one or two blocks, SE or not: 20 subnets of 16 blocks (an ExecuTorch export takes seconds)
STAGE = {"channels": 16, "stride": 2, "act": "hswish", "depths": [1, 2], "kernels": [3, 5], "expands": [3]}
MICRO = Space.from_dict(
    {
        "name": "micro",
        "stages": [{**STAGE, "se": [False, True]}],
        "resolutions": [16],
        "widths": [1.0],
        "in_chs": 1,
        "num_classes": 10,
        "stem_chs": 8,
        "ds_chs": 8,
        "head_chs": 32,
        "feature_chs": 32,
    }
)


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install 'edgenas[{module}]')")


def _first_output(out) -> np.ndarray:
    """A runner's result as an array, whatever the runtime returns (ncnn: the array itself)."""
    if isinstance(out, np.ndarray):
        return out
    first = out[0] if isinstance(out, (list, tuple)) else next(iter(out.values()))
    return first.numpy() if isinstance(first, torch.Tensor) else np.asarray(first)


@pytest.mark.parametrize("device", ["executorch", "ncnn", "openvino"])
def test_each_runtime_computes_what_onnx_runtime_computes(device):
    """The reference net in each runtime's format, on the runners' fixed input, against ONNX Runtime's output."""
    _need(device)
    runtime = make_runtime(device, threads=1)
    got = _first_output(runtime.load(model_in(None, "fp32", runtime.format))())
    want = _first_output(make_runtime("local-cpu").load(model_in(None, "fp32", "onnx"))())
    assert got.size == want.size
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-3, atol=1e-4)


def test_an_executorch_table_names_its_runtime_and_format(tmp_path):
    _need("executorch")
    from importlib.metadata import version

    space = dataclasses.replace(MICRO, stages=(dataclasses.replace(MICRO.stages[0], se=(True,)),))  # 8 blocks
    table = build_table(
        space,
        make_backend("executorch", threads=1),
        tmp_path / "et.json",
        device="executorch",
        protocol=Protocol(rounds=3),
        progress=False,
        drift_check=2,
    )
    h = table.header
    assert h["runtime"] == f"executorch {version('executorch')}" and h["fingerprint"]["format"] == "pte"
    assert h["providers"] == ["XnnpackBackend"] and h["noop_ms"] < h["reference_ms"]
    assert set(table.entries) == {s.key for s in table_specs(space)}
    assert all(e["ms"] > 0 for e in table.entries.values())


def test_an_ncnn_table_is_validated_end_to_end_in_its_format(tmp_path):
    _need("ncnn")
    path = tmp_path / "ncnn.json"
    backend = make_backend("ncnn", threads=1)
    build_table(MICRO, backend, path, device="ncnn", protocol=Protocol(rounds=3), progress=False, drift_check=2)
    report = validate_table(path, backend, n=8, progress=False)
    assert report["n_calibration"] + report["n_heldout"] == 8 and np.isfinite(report["heldout"]["mape_pct"])
    assert LatencyTable.load(path).header["runtime"].startswith("ncnn ")
    with pytest.raises(ValueError, match=r"^ncnn models are fp32 here: .*ncnn2int8"):
        build_table(MICRO, backend, tmp_path / "int8.json", device="ncnn", precision="int8", progress=False)


def test_the_protocol_refuses_a_runtime_without_its_noop_model():
    _need("ncnn")
    ref = reference_model("fp32", "ncnn")
    with pytest.raises(ValueError, match="ncnn runs ncnn models: pass the no-op model in that format"):
        time_models([ref], ref, runtime=make_runtime("ncnn"))
    assert time_models([ref], ref, runtime=make_runtime("ncnn"), noop=noop_for("ncnn"), protocol=Protocol(rounds=3))


@pytest.mark.parametrize(
    ("module", "device", "line"),
    [
        ("executorch", "executorch", r"^ExecuTorch is not installed: pip install 'edgenas\[executorch\]'$"),
        ("ncnn", "ncnn", r"^ncnn is not installed: pip install 'edgenas\[ncnn\]'$"),
    ],
)
def test_a_missing_phone_runtime_is_one_line_naming_the_install(monkeypatch, module, device, line):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    if module == "executorch":
        monkeypatch.setitem(sys.modules, "executorch.runtime", None)
        monkeypatch.setitem(sys.modules, "executorch.extension.pybindings", None)
    with pytest.raises(RuntimeError, match=line):
        make_backend(device)


def test_a_core_ml_package_is_converted_and_declares_what_the_model_takes(tmp_path):
    """Checked as far as Linux allows: converted, loads as a spec, input and output as declared; its metadata
    beside it; running it is refused in one line off macOS (a Mac's agent times it)."""
    _need("coremltools")
    import platform

    import coremltools as ct

    from edgenas.export import export_for
    from edgenas.finalize import write_device_file
    from edgenas.preprocess import preprocessing_metadata, read_metadata
    from edgenas.search_spaces import build_subnet

    arch = MICRO.parse("r16|k5e3se")
    net = build_subnet(MICRO, arch).eval()
    meta = preprocessing_metadata(
        resolution=16,
        channels=1,
        mean=[0.5],
        std=[0.25],
        classes=list("0123456789"),
        arch=str(arch),
        space="micro",
        data={"name": "digits"},
    )
    path = write_device_file(tmp_path / "pruned", "mlpackage", export_for("mlpackage", net, net.input_shape), meta)
    assert path.name == "pruned.mlpackage" and path.is_dir()
    spec = ct.utils.load_spec(str(path))
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "input" and list(inp.type.multiArrayType.shape) == [1, 1, 16, 16] and out.name == "output"
    assert read_metadata(str(path))["arch"] == str(arch)
    if platform.system() != "Darwin":
        with pytest.raises(RuntimeError, match=r"^Core ML runs models on macOS and iOS only: start `edgenas agent"):
            make_runtime("coreml")
