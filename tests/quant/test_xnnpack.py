"""QAT in XNNPACK's scheme: the int8 ExecuTorch program (and its ONNX twin) compute what the finetuned
fake-quant model computes, and a saved QAT model comes back as it was."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from edgenas.data import batches
from edgenas.distill import FitConfig, fit
from edgenas.search_spaces import SPACES, build_subnet


def test_the_int8_program_is_the_finetuned_model(digits_splits):
    pytest.importorskip("executorch", reason="pip install 'edgenas[executorch]'")
    from edgenas.latency_tables import ExecuTorch, OnnxRuntime
    from edgenas.quant import XnnpackQat

    s, space = digits_splits, SPACES["tiny"]
    torch.manual_seed(0)
    net = build_subnet(space, space.parse("r16|k3e3-k5e2se|k3e3se-k5e2"))
    fit(net, s, FitConfig(epochs=6, batch_size=64, lr=0.1), resolution=16, channels=1, progress=False)
    q = XnnpackQat(net, (1, 1, 16, 16))
    q.calibrate(x for x, _ in batches(s.train, batch_size=64, resolution=16, channels=1, mean=s.mean, std=s.std))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    # fit switches it between training and evaluation each epoch, as finalize's QAT does
    fit(q, s, FitConfig(epochs=2, batch_size=64, lr=0.01), resolution=16, channels=1, progress=False)
    assert not q.training and any(not torch.equal(before[k], v) for k, v in q.state_dict().items())

    x = next(batches(s.test, batch_size=64, resolution=16, channels=1, mean=s.mean, std=s.std))[0]
    with torch.no_grad():
        want = q(x).numpy()
    method = ExecuTorch(1).method(q.to_pte())
    pte = np.concatenate([ExecuTorch.infer(method, x[i : i + 1].numpy()) for i in range(len(x))])
    session = OnnxRuntime(["CPUExecutionProvider"]).session(q.to_onnx(dynamic_batch=True))
    onnx = session.run(None, {"input": x.numpy()})[0]
    scale = np.abs(want).max()
    # XNNPACK's int8 kernels round where fake quantization computes in float: a few steps apart
    assert np.abs(pte - want).mean() < 0.02 * scale and (pte.argmax(1) == want.argmax(1)).mean() >= 0.98
    # ONNX Runtime runs the same QDQ graph; without VNNI its u8s8 products saturate with full 8-bit weights
    assert (onnx.argmax(1) == want.argmax(1)).mean() >= 0.9

    buf = io.BytesIO()
    torch.save(q, buf)  # the exported graph does not pickle: rebuilt from its source model and state
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert not again.training and torch.equal(again(x), q(x))
