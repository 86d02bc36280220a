"""QAT: the int8 ONNX export runs in a torch-free process and agrees with the fake-quant model."""

from __future__ import annotations

import collections
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgenas.data import batches
from edgenas.distill import FitConfig, fit
from edgenas.nas import accuracy
from edgenas.quant import calibrate_qat, export_qat, fake_quant_off, prepare_qat
from edgenas.search_spaces import SPACES, build_subnet

_CHILD = """
import sys, numpy as np, onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
out = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
np.save(sys.argv[3], out)
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "edgenas")], "imported more than onnxruntime"
"""


def test_qat_int8_matches_fake_quant_in_a_torch_free_process(digits_splits, tmp_path):
    s = digits_splits
    space = SPACES["tiny"]
    torch.manual_seed(0)
    net = build_subnet(space, space.parse("r16|k3e3-k5e2se|k3e3se-k5e2"))
    fit(net, s, FitConfig(epochs=6, batch_size=64, lr=0.1), resolution=16, channels=1, progress=False)
    q = prepare_qat(net)
    calib = batches(s.train, batch_size=64, resolution=16, channels=1, mean=s.mean, std=s.std, limit=4)
    calibrate_qat(q, (x for x, _ in calib))
    # with fake-quant off, the BN-folded model is the fp32 model
    x = torch.cat(
        [b for b, _ in batches(s.val, batch_size=400, resolution=16, channels=1, mean=s.mean, std=s.std)]
        + [b for b, _ in batches(s.test, batch_size=400, resolution=16, channels=1, mean=s.mean, std=s.std)]
    )
    with fake_quant_off(q), torch.no_grad():
        assert torch.allclose(q(x), net.eval()(x), atol=1e-4)
    fit(q, s, FitConfig(epochs=1, batch_size=64, lr=0.01), resolution=16, channels=1, progress=False)
    assert accuracy(q, s.test, s, resolution=16, channels=1) > 0.9

    data = export_qat(q, (1, 1, 16, 16))
    path = tmp_path / "int8.onnx"
    path.write_bytes(data)
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    # weights are stored as int8, not float
    assert any(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(path)).graph.initializer)
    # ONNX Runtime runs every convolution as an int8 convolution
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert fused["QLinearConv"] == ops["Conv"] and fused["Conv"] == 0

    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True
    )
    onnx_out = np.load(tmp_path / "y.npy")
    with torch.no_grad():
        torch_out = q.eval()(x).numpy()
    agreement = (onnx_out.argmax(1) == torch_out.argmax(1)).mean()
    assert agreement >= 0.99, agreement
