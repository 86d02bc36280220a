"""Quantization-aware finetuning whose fake-quant is exactly what ONNX Runtime runs in int8.

``prepare_qat(subnet)`` returns a copy in which

- every convolution has its BatchNorm folded in (as deployed; the folded weights are what
  QAT trains) and its weights fake-quantized per output channel, symmetric, in a 7-bit range
  (scale = max|w| / 63): on AVX2 CPUs without VNNI, ONNX Runtime's u8s8 kernels saturate
  with full 8-bit weights;
- activations are fake-quantized per tensor to uint8 (asymmetric; min/max tracked with an
  exponential moving average while training) at the input, after every conv (+ act), after
  the SE squeeze, gate and product, after every residual sum and before the classifier;
- biases are left in float, which ONNX Runtime's QDQ fusion quantizes to int32 with scale
  input-scale x weight-scale, the same rounding the fake-quant model sees at 1e-6 precision.

``torch.onnx.export`` turns each fake-quant op into a QuantizeLinear / DequantizeLinear pair,
so the exported model is a QDQ model that ONNX Runtime fuses into int8 kernels.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.quant._xnnpack import XnnpackQat
from edgenas.search_spaces import (
    Classifier,
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    SubNet,
)

__all__ = ["ActQuant", "QuantNet", "calibrate_qat", "export_qat", "frozen_for_export", "fake_quant_off", "prepare_qat"]

WEIGHT_QMAX = 63  # 7-bit magnitude, stored in int8


class ActQuant(nn.Module):
    """uint8 per-tensor fake-quant with EMA min/max observation (observes only in training)."""

    def __init__(self, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True

    def qparams(self) -> tuple[float, int]:
        lo = min(float(self.min_val), 0.0)
        hi = max(float(self.max_val), 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        zero_point = int(min(max(round(-lo / scale), 0), 255))
        return scale, zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                lo, hi = x.min(), x.max()
                if not bool(self.initialized):
                    self.min_val.copy_(lo)
                    self.max_val.copy_(hi)
                    self.initialized.fill_(True)
                else:
                    self.min_val.lerp_(lo, self.momentum)
                    self.max_val.lerp_(hi, self.momentum)
        if not self.enabled or not bool(self.initialized):
            return x
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


def _weight_scale(w: torch.Tensor) -> torch.Tensor:
    flat = w.detach().reshape(w.shape[0], -1).abs().amax(1)
    return (flat / WEIGHT_QMAX).clamp(min=1e-8).float()


def _fake_quant_weight(w: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    scale = _weight_scale(w) if scale is None else scale
    zero = torch.zeros(w.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)


def _act(name: nn.Module) -> nn.Module:
    return copy.deepcopy(name)


def _needs_pre_quant(act: nn.Module) -> bool:
    # ONNX Runtime fuses conv -> Q into an int8 conv and folds ReLU/ReLU6 into that Q's
    # range, but hardswish/hardsigmoid have no int8 kernel: the conv output must be
    # quantized before them, as ONNX Runtime's own static quantization does.
    return not isinstance(act, (nn.ReLU, nn.ReLU6, nn.Identity))


class QConv(nn.Module):
    """Conv with its BN folded in, fake-quantized weights, activation and output fake-quant.

    BatchNorm is folded once, when the model is prepared, and the folded weight and bias are
    what QAT trains. Training the unfolded weight through ``gamma / sqrt(var)`` instead
    multiplies its gradient by that factor, which for channels with a tiny running variance
    (common after pruning) made QAT diverge within a few steps.
    """

    def __init__(self, cba: ConvBNAct):
        super().__init__()
        conv, bn = cba.conv, cba.bn
        self.stride, self.padding, self.groups = conv.stride, conv.padding, conv.groups
        with torch.no_grad():
            factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.weight = nn.Parameter((conv.weight * factor.view(-1, 1, 1, 1)).detach().clone())
            self.bias = nn.Parameter((bn.bias - bn.running_mean * factor).detach().clone())
        self.act = _act(cba.act)
        self.pre_q = ActQuant() if _needs_pre_quant(self.act) else None
        self.out_q = ActQuant()
        self.enabled = True

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _frozen(self):
            w, b = self._frozen_w, self._frozen_b
        else:
            w, b = self.folded()
        if self.enabled:
            w = _fake_quant_weight(w, self._frozen_scale if _frozen(self) else None)
        y = F.conv2d(x, w, b, self.stride, self.padding, 1, self.groups)
        if self.pre_q is not None:
            y = self.pre_q(y)
        return self.out_q(self.act(y))


class QLinear(nn.Module):
    """1x1 conv (SE) or linear layer with fake-quantized per-channel weights."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.is_conv = isinstance(layer, nn.Conv2d)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = (self._frozen_w, self._frozen_b) if _frozen(self) else (self.weight, self.bias)
        w = _fake_quant_weight(w, self._frozen_scale if _frozen(self) else None) if self.enabled else w
        return F.conv2d(x, w, b) if self.is_conv else F.linear(x, w, b)


class QSqueezeExcite(nn.Module):
    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.pool_q = ActQuant()
        self.fc1 = QLinear(se.fc1)
        self.fc1_q = ActQuant()
        self.fc2 = QLinear(se.fc2)
        self.fc2_q = ActQuant()
        self.gate_q = ActQuant()
        self.out_q = ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool_q(x.mean((2, 3), keepdim=True))
        s = self.fc1_q(F.relu(self.fc1(s)))
        g = self.gate_q(F.hardsigmoid(self.fc2_q(self.fc2(s))))
        return self.out_q(x * g)


class QBlock(nn.Module):
    """A quantized depthwise-separable or inverted-residual block."""

    def __init__(self, block: DepthwiseSeparable | InvertedResidual):
        super().__init__()
        self.expand = QConv(block.expand) if isinstance(block, InvertedResidual) else None
        self.dw = QConv(block.dw)
        self.se = QSqueezeExcite(block.se) if block.se is not None else None
        last = block.project if isinstance(block, InvertedResidual) else block.pw
        self.project = QConv(last)
        self.residual = block.residual
        self.add_q = ActQuant() if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return self.add_q(x + y) if self.residual else y


class QClassifier(nn.Module):
    def __init__(self, head: Classifier):
        super().__init__()
        self.pool_q = ActQuant()
        self.fc1 = QLinear(head.fc1)
        self.act = _act(head.act)
        self.fc1_q = ActQuant()
        self.act_q = ActQuant()
        self.fc2 = QLinear(head.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool_q(x.mean((2, 3)))
        return self.fc2(self.act_q(self.act(self.fc1_q(self.fc1(x)))))


class QuantNet(nn.Module):
    """The fake-quant twin of a :class:`SubNet` (see the module docstring)."""

    def __init__(self, net: SubNet):
        super().__init__()
        self.arch = getattr(net, "arch", "")
        self.input_shape = tuple(net.input_shape) if hasattr(net, "input_shape") else None
        self.input_q = ActQuant()
        layers = []
        for block in net.blocks:
            if isinstance(block, ConvBNAct):
                layers.append(QConv(block))
            elif isinstance(block, (DepthwiseSeparable, InvertedResidual)):
                layers.append(QBlock(block))
            elif isinstance(block, Classifier):
                layers.append(QClassifier(block))
            else:
                raise TypeError(f"prepare_qat: no quantized form for {type(block).__name__}")
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.input_q(x))


def _frozen(module: nn.Module) -> bool:
    return getattr(module, "_frozen_w", None) is not None


@contextlib.contextmanager
def frozen_for_export(model: QuantNet):
    """Within this block, folded weights and their scales are constants.

    Traced from parameters, BN folding and weight scales would be exported as graph ops
    that ONNX Runtime cannot fuse into int8 convolutions. :func:`export_qat` exports within
    it (through :func:`edgenas.export.export_quantized`, which stores the weights as int8).
    """
    layers = [m for m in model.modules() if isinstance(m, (QConv, QLinear))]
    names = ("_frozen_w", "_frozen_b", "_frozen_scale")
    try:
        with torch.no_grad():
            for m in layers:
                w, b = m.folded() if isinstance(m, QConv) else (m.weight, m.bias)
                # buffers, not plain attributes: the tracer would evaluate ops on plain
                # tensors eagerly and write the fake-quantized weights as float constants
                m.register_buffer("_frozen_w", w.detach().clone())
                m.register_buffer("_frozen_b", b.detach().clone())
                m.register_buffer("_frozen_scale", _weight_scale(w))
        yield model
    finally:
        for m in layers:
            for n in names:
                m._buffers.pop(n, None)


def export_qat(
    model: QuantNet | XnnpackQat,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = False,
) -> bytes:
    """The int8 QDQ ONNX model of a QAT model: its fake-quant, weights stored as int8 (an
    :class:`XnnpackQat` in XNNPACK's scheme, see :meth:`XnnpackQat.to_onnx`)."""
    from edgenas.export import export_quantized
    from edgenas.io import atomic_write_bytes

    if isinstance(model, XnnpackQat):
        data = model.to_onnx(dynamic_batch=dynamic_batch)
        if path is not None:
            atomic_write_bytes(path, data)
        return data
    with frozen_for_export(model):
        return export_quantized(model, input_shape, path, dynamic_batch=dynamic_batch)


def prepare_qat(net: SubNet) -> QuantNet:
    """A fake-quant copy of ``net`` (BN folded, weights and activations fake-quantized)."""
    return QuantNet(copy.deepcopy(net).eval())


@contextlib.contextmanager
def fake_quant_off(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` without fake quantization inside the block (the BN-folded fp32 model), as it was after it."""
    switches = [m for m in model.modules() if hasattr(m, "enabled")]
    before = [m.enabled for m in switches]
    for m in switches:
        m.enabled = False
    try:
        yield model
    finally:
        for m, on in zip(switches, before):
            m.enabled = on


@torch.no_grad()
def calibrate_qat(model: QuantNet | XnnpackQat, inputs) -> QuantNet | XnnpackQat:
    """Initialise activation ranges from a few batches (observers run in training mode only;
    :meth:`XnnpackQat.calibrate` for XNNPACK's scheme)."""
    if isinstance(model, XnnpackQat):
        return model.calibrate(inputs)
    model.train()
    for x in inputs:
        model(x)
    return model.eval()
