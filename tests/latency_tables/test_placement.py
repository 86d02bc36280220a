"""The placement report: which kernel ran each node, as each runtime reports it."""

from __future__ import annotations

import sys

import pytest

from edgenas.latency_tables import block_model, make_runtime, placement, placement_summary
from edgenas.search_spaces import BlockSpec

SE_BLOCK = BlockSpec("ir", 16, 16, 16, 3, 1, 48, True, "hswish")


def test_onnx_runtime_reports_every_node_with_its_provider_precision_and_time():
    runtime = make_runtime("local-cpu")
    fp32 = placement(runtime, block_model(SE_BLOCK, "fp32"), runs=5)
    assert fp32 and {r["executed_by"] for r in fp32} == {"CPUExecutionProvider"}
    assert all(r["us"] > 0 for r in fp32) and {r["precision"] for r in fp32} == {"fp32"}
    s32 = placement_summary(fp32)
    assert s32["fallbacks"] == [] and s32["float_nodes_in_int8"] == 0 and s32["timed"]
    int8 = placement_summary(placement(runtime, block_model(SE_BLOCK, "int8"), runs=5))
    # hard-swish and the SE's gate have no int8 kernels in ONNX Runtime: float islands between Q/DQ pairs
    assert int8["float_nodes_in_int8"] > 0 and int8["conversion_us"] > 0
    assert int8["costliest_ops"] and int8["total_us"] == pytest.approx(
        sum(v["us"] for v in int8["by_executor"].values())
    )


def test_a_node_on_another_provider_than_the_first_asked_is_a_fallback():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs a second execution provider (CUDA): CPU nodes under it are the fallbacks")
    rows = placement(make_runtime("local", providers=("cuda", "cpu")), block_model(SE_BLOCK, "fp32"), runs=3)
    assert all(r["fallback"] == (r["executed_by"] != "CUDAExecutionProvider") for r in rows)


def test_executorch_times_each_xnnpack_operator_and_every_portable_kernel_outside_the_delegate():
    pytest.importorskip("executorch", reason="pip install 'edgenas[executorch]'")
    runtime = make_runtime("executorch")
    rows = placement(runtime, block_model(SE_BLOCK, "fp32", "pte"), runs=5)
    inside = [r for r in rows if not r["fallback"]]
    assert inside and {r["executed_by"] for r in inside} == {"XnnpackBackend"}
    assert any(r["op"] == "Convolution (NHWC, F32) DWConv" and r["precision"] == "fp32" for r in inside)
    assert all(r["executed_by"] == "portable kernel" for r in rows if r["fallback"])
    summary = placement_summary(rows)
    assert summary["timed"] and all(r["us"] >= 0 for r in rows) and summary["total_us"] > 0
    # int8: XNNPACK's quantized kernels (QC8 weights), the same delegate
    int8 = placement(runtime, block_model(SE_BLOCK, "int8", "pte"), runs=5)
    assert any(r["op"].startswith("Convolution (NHWC, QC8)") and r["precision"] == "int8" for r in int8)


def test_executorch_without_its_devtools_lists_the_instructions_untimed(monkeypatch):
    """A runtime-only install (no ``executorch.devtools`` to read the event trace) still says what ran where."""
    pytest.importorskip("executorch", reason="pip install 'edgenas[executorch]'")
    monkeypatch.setitem(sys.modules, "executorch.devtools", None)  # importing it raises ImportError
    rows = placement(make_runtime("executorch"), block_model(SE_BLOCK, "fp32", "pte"), runs=2)
    assert any(r["executed_by"] == "XnnpackBackend" for r in rows)
    assert not placement_summary(rows)["timed"]


def test_a_net_without_se_runs_whole_inside_one_xnnpack_delegate():
    """The classifier's pool included: no portable kernel, one delegate call."""
    pytest.importorskip("executorch", reason="pip install 'edgenas[executorch]'")
    from edgenas.latency_tables import arch_model
    from edgenas.search_spaces import SPACES, Arch

    rows = placement(make_runtime("executorch"), arch_model(SPACES["tiny"], Arch.parse("r16|k3e2|k3e2"), "fp32", "pte"))
    assert not [r for r in rows if r["fallback"]]
    assert sum(r["op"].startswith("delegate call") for r in rows) == 1


def test_ncnn_reports_its_layers():
    pytest.importorskip("ncnn", reason="pip install 'edgenas[ncnn]'")
    rows = placement(make_runtime("ncnn"), block_model(SE_BLOCK, "fp32", "ncnn"))
    ops = {r["op"] for r in rows}
    assert {"Convolution", "ConvolutionDepthWise", "HardSwish"} <= ops and not any(r["fallback"] for r in rows)
