"""ONNX export: fp32 matches torch, int8 runs on int8 kernels and stays close to fp32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgenas.export import export_onnx
from edgenas.latency_tables._models import _randomised
from edgenas.search_spaces import SPACES, Arch, build_subnet


def _run(model_bytes: bytes, x: np.ndarray, optimized: str | None = None) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = optimized
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture
def net():
    space = SPACES["tiny"]
    return _randomised(build_subnet(space, Arch.parse("r24|k5e3se-k3e2|k3e3se-k5e2")), 1)


def test_fp32_export_matches_torch(net, tmp_path):
    path = tmp_path / "m.onnx"
    data = export_onnx(net, net.input_shape, path)
    assert path.read_bytes() == data
    onnx.checker.check_model(onnx.load(str(path)))
    x = np.random.default_rng(0).standard_normal((1, 1, 24, 24)).astype(np.float32)
    with torch.no_grad():
        expect = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(data, x), expect, rtol=1e-4, atol=1e-5)


def test_int8_export_uses_int8_convolutions(net, tmp_path):
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 1, 24, 24)).astype(np.float32)
    data = export_onnx(net, net.input_shape, precision="int8", calibration=calib)
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    opt = tmp_path / "opt.onnx"
    x = calib[:4]
    y8 = np.concatenate([_run(data, x[i : i + 1], str(opt)) for i in range(4)])
    fused = [n.op_type for n in onnx.load(str(opt)).graph.node]
    n_conv = sum(op == "Conv" for op in ops)
    assert sum(op == "QLinearConv" for op in fused) >= n_conv - 1  # every conv but at most one runs in int8
    with torch.no_grad():
        y32 = net(torch.from_numpy(x)).numpy()
    cos = (y8 * y32).sum(1) / (np.linalg.norm(y8, axis=1) * np.linalg.norm(y32, axis=1))
    assert cos.min() > 0.95


def test_bad_precision_is_rejected(net):
    with pytest.raises(ValueError, match="precision must be one of"):
        export_onnx(net, net.input_shape, precision="fp16")


def _structure(data: bytes) -> list[tuple]:
    """Each node's op, where its inputs come from (graph input, initializer of a shape, node), its attributes."""
    graph = onnx.load_from_string(data).graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output}
    sources = {i.name: "input" for i in graph.input}

    def source(name: str):
        return sources.get(name) or (("init", inits[name]) if name in inits else ("node", producer.get(name)))

    return [
        (
            n.op_type,
            tuple(source(i) for i in n.input),
            tuple(sorted((a.name, onnx.helper.get_attribute_value(a).__class__.__name__) for a in n.attribute)),
        )
        for n in graph.node
    ]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_exported_graph_depends_on_the_arch_not_the_weights(tiny, precision):
    """A fresh model (zero folded biases, which the exporter merges), a randomised and a trained one: one graph."""
    arch = Arch.parse("r24|k5e3se-k3e2|k3e3se-k5e2")
    torch.manual_seed(0)
    fresh = build_subnet(tiny, arch).eval()
    trained = build_subnet(tiny, arch)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        trained(torch.randn(8, 1, 24, 24)).logsumexp(1).mean().backward()
        opt.step()
    exports = [
        export_onnx(m.eval(), m.input_shape, precision=precision)
        for m in (fresh, _randomised(build_subnet(tiny, arch), 1), trained)
    ]
    structures = [_structure(d) for d in exports]
    assert not any(op == "Identity" for op, *_ in structures[0])
    assert structures[0] == structures[1] == structures[2]
