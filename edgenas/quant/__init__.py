"""Quantization-aware finetuning whose fake quantization is what the device runs in int8: ONNX
Runtime's QDQ models (:func:`prepare_qat`) or ExecuTorch's XNNPACK programs (:class:`XnnpackQat`)."""

from __future__ import annotations

from edgenas.quant._qat import (
    ActQuant,
    QuantNet,
    calibrate_qat,
    export_qat,
    fake_quant_off,
    frozen_for_export,
    prepare_qat,
)
from edgenas.quant._xnnpack import XnnpackQat

__all__ = [
    "ActQuant",
    "QuantNet",
    "XnnpackQat",
    "calibrate_qat",
    "export_qat",
    "fake_quant_off",
    "frozen_for_export",
    "prepare_qat",
]
