"""The timing protocol on real ONNX Runtime sessions, and the torch-free device side."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgenas.latency_tables import LocalBackend, Protocol, time_models
from edgenas.latency_tables._models import block_model, reference_model
from edgenas.search_spaces import BlockSpec


def test_bigger_blocks_take_longer_and_overhead_is_small():
    small = BlockSpec("ir", 16, 16, 16, 3, 1, 48, False, "relu6")
    big = BlockSpec("ir", 16, 16, 64, 7, 1, 96, True, "relu6")  # ~ 30x the work
    timings, ref, noop = time_models(
        [block_model(small, "fp32"), block_model(big, "fp32")], reference_model("fp32"), protocol=Protocol(rounds=5)
    )
    t_small, t_big = timings
    assert 0 < noop.ms < t_small.ms < t_big.ms
    assert t_big.ms > 3 * t_small.ms
    assert ref.rel == 1.0
    assert t_big.rel == pytest.approx(t_big.ms / ref.ms, rel=0.5)
    assert all(t.runs >= 5 for t in timings)


def test_every_turn_begins_with_an_untimed_run():
    """The first run after other models ran reloads the weights they evicted, which a user timing one file in
    a loop never pays: each turn runs its model once untimed, so every model ran warm-up + rounds + timed runs."""
    from edgenas.latency_tables import OnnxRuntime

    calls: list[int] = []

    class Counting(OnnxRuntime):
        def load(self, model: bytes):
            run, i = super().load(model), len(calls)
            calls.append(0)

            def counted():
                calls[i] += 1
                return run()

            return counted

    protocol = Protocol(warmup=2, rounds=4)
    block = BlockSpec("ir", 16, 16, 16, 3, 1, 48, False, "relu6")
    timings, ref, noop = time_models(
        [block_model(block, "fp32")],
        reference_model("fp32"),
        protocol=protocol,
        runtime=Counting(["CPUExecutionProvider"]),
    )
    assert protocol.turn_warmup == 1
    assert calls == [protocol.warmup + protocol.rounds + t.runs for t in (ref, noop, *timings)]


def test_protocol_rejects_bad_settings():
    with pytest.raises(ValueError, match="rounds >= 3"):
        Protocol(rounds=1)
    with pytest.raises(ValueError, match="quantile"):
        Protocol(quantile=0.9)
    with pytest.raises(ValueError, match="turn_warmup >= 0"):
        Protocol(turn_warmup=-1)


def test_unavailable_provider_lists_the_available_ones():
    with pytest.raises(ValueError, match="not available here; available: .*CPUExecutionProvider"):
        LocalBackend(providers=["qnn"])


def test_device_side_does_not_import_torch():
    code = (
        "import sys, edgenas.latency_tables as lt\n"
        "from edgenas.latency_tables import LocalBackend, LatencyTable, Protocol, time_models\n"
        "from edgenas.latency_tables import AgentBackend, make_agent_server\n"
        "import edgenas.cli\n"
        "LocalBackend().fingerprint()\n"
        "make_agent_server(token='12345678').server_close()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_noop_model_is_the_identity_model_onnx_builds():
    import onnx
    from onnx import TensorProto, helper

    from edgenas.latency_tables import noop_model

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "noop",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert noop_model() == onnx.shape_inference.infer_shapes(model).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(noop_model()))
