"""Quantization: QAT with fake-quant that matches ONNX Runtime's QDQ int8 execution."""

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

__all__ = ["ActQuant", "QuantNet", "calibrate_qat", "export_qat", "fake_quant_off", "frozen_for_export", "prepare_qat"]
