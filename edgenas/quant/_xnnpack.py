"""Quantization-aware finetuning in the scheme ExecuTorch's XNNPACK int8 programs run.

:class:`XnnpackQat` wraps a model prepared by pt2e's ``prepare_qat_pt2e`` with XNNPACK's own
quantizer (:func:`edgenas.export.xnnpack_quantizer`: int8 weights per output channel, int8
activations per tensor, BatchNorm folded as the program folds it). What QAT trains is the
graph the int8 program is converted from (:meth:`XnnpackQat.to_pte`), so the file that runs
is the one that was finetuned. The ONNX Runtime scheme (:func:`edgenas.quant.prepare_qat`)
differs: 7-bit weights, uint8 activations, its own places for quantization.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from edgenas.export import compact_names, lower_to_pte, xnnpack_quantizer

__all__ = ["XnnpackQat"]


class XnnpackQat(nn.Module):
    """``model`` with XNNPACK's fake quantization, for inputs of ``input_shape`` (any batch size).

    Observers record activation ranges in training (and in :meth:`calibrate`), not in evaluation,
    so that scoring the model leaves it as it was; ``train()`` and ``eval()`` switch BatchNorm
    inside the exported graph (pt2e's ``move_exported_model_to_*``) and the observers.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        super().__init__()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        self.input_shape = tuple(input_shape)
        object.__setattr__(self, "_source", copy.deepcopy(model).cpu().eval())  # not a submodule: to rebuild it
        example = (torch.zeros((2, *self.input_shape[1:])),)
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.export.export(copy.deepcopy(self._source), example, dynamic_shapes=({0: batch},)).module()
            self.graph = prepare_qat_pt2e(graph, xnnpack_quantizer(qat=True))
        # a known state before anything else: a fresh graph switched to evaluation first, then to training,
        # gave int8 programs that XNNPACK refuses to run ("unsupported parameter")
        self.training = False
        self.train(True).train(False)

    def __reduce__(self):
        # the exported graph does not pickle: saved as its source model and its state, prepared again on load
        return _rebuild, (self._source, self.input_shape, self.state_dict(), self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> XnnpackQat:
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

        if mode != self.training:
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self._observe(mode)
        self.training = mode
        return self

    def _observe(self, on: bool) -> None:
        from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

        for m in self.graph.modules():
            if isinstance(m, FakeQuantizeBase):
                m.enable_observer() if on else m.disable_observer()

    def calibrate(self, inputs) -> XnnpackQat:
        """Initial activation ranges from a few batches (no gradient, BatchNorm statistics left alone)."""
        self.eval()
        self._observe(True)
        with torch.no_grad():
            for x in inputs:
                self(x)
        self._observe(False)
        return self

    def int8_graph(self) -> nn.Module:
        """The int8 model of the finetuned graph (pt2e's ``convert_pt2e``, on a copy), on the CPU."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_pt2e(copy.deepcopy(self.graph).cpu())

    def to_pte(self) -> bytes:
        """The int8 ExecuTorch program, delegated to XNNPACK: the file that runs is the one finetuned."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lower_to_pte(self.int8_graph(), (torch.zeros(self.input_shape),))

    def to_onnx(self, *, dynamic_batch: bool = False) -> bytes:
        """The same int8 model as an ONNX QDQ graph, for exchange: ONNX Runtime runs it, but on CPUs without
        VNNI its u8s8 products saturate with full 8-bit weights (its own scheme keeps 7), so there it
        agrees less with the finetuned model than the ExecuTorch program does."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = io.BytesIO()
            dims = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) if dynamic_batch else None
            torch.onnx.export(
                self.int8_graph(),
                (torch.zeros(self.input_shape),),
                out,
                dynamo=True,
                dynamic_shapes=dims,
                verbose=False,  # no progress lines on stdout
                input_names=["input"],
                output_names=["output"],
            )
            return compact_names(out.getvalue())


def _rebuild(source: nn.Module, input_shape: tuple[int, ...], state: dict, training: bool) -> XnnpackQat:
    model = XnnpackQat(source, input_shape)
    model.load_state_dict(state)
    return model.train(training)
