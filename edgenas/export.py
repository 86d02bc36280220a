"""Export of torch modules in fp32 and int8: ONNX (QDQ), and the formats of the phone runtimes.

fp32 uses torch's TorchScript-based exporter (``dynamo=False``): it is about 40x faster
than the dynamo exporter on a single block (15 ms vs 600 ms), which matters when a latency
table exports thousands of blocks, and it folds BatchNorm into the convolutions in eval
mode just as deployment does. int8 is ONNX Runtime's static quantization in QDQ format
with per-channel weights, uint8 activations and int8 weights in a 7-bit range
(``reduce_range``): on AVX2 CPUs without VNNI the u8s8 kernels saturate with full 8-bit
weights. Every convolution becomes an int8 convolution in ONNX Runtime.

:func:`export_for` writes the bytes a runtime loads (``edgenas.latency_tables.FORMATS``):
ONNX; an ExecuTorch program delegated to XNNPACK (``pte``: ``torch.export``, int8 through
the pt2e flow with XNNPACK's quantizer, per-channel symmetric weights); an ncnn model
(``ncnn``: pnnx converts the traced module, fp32 weights, packed in one zip with the input
shape); a Core ML ML program (``mlpackage``: coremltools converts the exported program,
float16 compute as the Neural Engine runs it, packed in one zip).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgenas.io import atomic_write_bytes, pack_folder, pack_ncnn
from edgenas.preprocess import METADATA_KEY

__all__ = [
    "OPSET",
    "PRECISIONS",
    "activation_peak",
    "compact_names",
    "export_coreml",
    "export_for",
    "export_ncnn",
    "export_onnx",
    "export_pte",
    "export_quantized",
    "fold_constant_quantization",
    "lower_to_pte",
    "quantize_int8",
    "save_openvino_ir",
    "unshare_initializers",
    "with_metadata",
    "xnnpack_quantizer",
]

OPSET = 17
PRECISIONS = ("fp32", "int8")
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _fp32_bytes(
    model: nn.Module,
    input_shape: tuple[int, ...],
    opset: int,
    constant_folding: bool = True,
    dynamic_batch: bool = False,
) -> bytes:
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(input_shape),),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=constant_folding,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            )
    finally:
        model.train(was_training)
    return unshare_initializers(buf.getvalue())


def unshare_initializers(data: bytes) -> bytes:
    """Give every ``Identity(initializer)`` node its own copy of the initializer.

    The exporter merges initializers of equal value and reads the copies through Identity
    nodes. Which tensors are equal depends on the weights (a fresh model's folded BN
    biases are all zero), and a bias behind an Identity is not quantized with its
    convolution, so ONNX Runtime ran a different, 2.4x slower int8 graph for a fresh model
    than for a trained one of the same arch. Undoing the merge makes the graph a function
    of the architecture alone.
    """
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    copies = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits]
    if not copies:
        return data
    for node in copies:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0]))
        graph.node.remove(node)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _Reader:
    """ONNX Runtime calibration reader over a list of input arrays."""

    def __init__(self, arrays: Iterable[np.ndarray]):
        self._it = iter([{INPUT_NAME: a.astype(np.float32)} for a in arrays])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - required by some ORT versions' calibrators
        pass


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs its advice through the root logger: silence it below ERROR
    for the call only, and give the caller's level back."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_model: bytes, calibration: np.ndarray) -> bytes:
    """QDQ int8 model from an fp32 ONNX model and calibration inputs (N, C, H, W)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be a non-empty (N, C, H, W) array, got shape {calibration.shape}")
    with _quiet_root_logger(), tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        Path(src).write_bytes(fp32_model)
        quantize_static(
            src,
            dst,
            _Reader(calibration[i : i + 1] for i in range(len(calibration))),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return Path(dst).read_bytes()


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
    *,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
    opset: int = OPSET,
    dynamic_batch: bool = False,
) -> bytes:
    """Export ``model`` for an input shape; returns the ONNX bytes, also written to ``path``.

    int8 calibrates on ``calibration`` (N, C, H, W); without it, on 8 standard-normal
    inputs, which is right for latency but not for accuracy. ``dynamic_batch``: the batch
    dimension is symbolic (``batch``); ONNX Runtime runs batch 1 of it exactly as fast as the
    fixed shape, OpenVINO 1.2x (fp32) to 1.5x (int8) slower (measured on this project's nets).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    data = _fp32_bytes(model, tuple(input_shape), opset, dynamic_batch=dynamic_batch)
    if precision == "int8":
        if calibration is None:
            calibration = np.random.default_rng(0).standard_normal((8, *input_shape[1:]), dtype=np.float32)
        data = quantize_int8(data, calibration)
    data = compact_names(data)
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _calibration_or_noise(calibration: np.ndarray | None, input_shape: tuple[int, ...]) -> np.ndarray:
    if calibration is None:  # right for latency, not for accuracy
        return np.random.default_rng(0).standard_normal((8, *input_shape[1:]), dtype=np.float32)
    return calibration


def export_pte(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
) -> bytes:
    """An ExecuTorch program of ``model`` for one input shape, its graph delegated to XNNPACK.

    int8: pt2e post-training quantization with XNNPACK's quantizer (:func:`xnnpack_quantizer`)
    calibrated on ``calibration`` (N, C, H, W), else on noise.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    example = (torch.zeros(input_shape),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = copy.deepcopy(model).eval()
        if precision == "int8":
            module = _pt2e_int8(module, example, _calibration_or_noise(calibration, input_shape))
        return lower_to_pte(module, example)


def lower_to_pte(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    """``module`` (float, or int8 as pt2e's ``convert_pt2e`` leaves it) exported and delegated to XNNPACK."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise RuntimeError("ExecuTorch is not installed: pip install 'edgenas[executorch]'") from None
    program = torch.export.export(module, example)
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def xnnpack_quantizer(*, qat: bool = False):
    """XNNPACK's pt2e quantizer: int8 weights per output channel (symmetric), int8 activations per tensor;
    ``qat``: its fake quantization for training (BatchNorm folded as the int8 program folds it)."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError:
        raise RuntimeError("ExecuTorch is not installed: pip install 'edgenas[executorch]'") from None
    _cache_pt2e_patterns()
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def _cache_pt2e_patterns() -> None:
    """Build each of torchao's pt2e pattern graphs once per process instead of at every use.

    Its conversion re-exports ~100 fixed (conv, BatchNorm, quantize) patterns with torch.export
    every time it runs, and so does every switch between training and evaluation: ~0.5 s each,
    45 s per ``convert_pt2e`` of any model, however small (measured: 33 of a QAT test's 130 s per
    conversion). A pattern's graph depends only on the pattern's code and captured values and on
    the example inputs' shapes, which is the cache key; each use gets its own copy. A pattern
    whose captured values cannot be hashed is built as before.
    """
    import torchao.quantization.pt2e.qat_utils as qat_utils
    import torchao.quantization.pt2e.utils as utils

    build = getattr(utils, "_get_aten_graph_module_for_pattern", None)
    if build is None or getattr(build, "edgenas_cached", False):
        return  # already cached, or a torchao that builds its patterns another way: left as it is
    graphs: dict = {}

    def spec(v):
        return ("tensor", tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else v

    def cached(pattern, example_inputs, is_cuda=False, **kwargs):
        fn = getattr(pattern, "fn", pattern)  # torchao wraps plain functions in a WrapperModule
        try:
            key = (
                fn.__code__,
                tuple(c.cell_contents for c in fn.__closure__ or ()),
                tuple(spec(x) for x in example_inputs),
                is_cuda,
                tuple(sorted((k, spec(v)) for k, v in kwargs.items())),
            )
            hash(key)
        except (AttributeError, TypeError, ValueError):
            return build(pattern, example_inputs, is_cuda, **kwargs)
        if key not in graphs:
            graphs[key] = build(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(graphs[key])

    cached.edgenas_cached = True
    utils._get_aten_graph_module_for_pattern = cached
    if getattr(qat_utils, "_get_aten_graph_module_for_pattern", None) is build:  # imported by name there
        qat_utils._get_aten_graph_module_for_pattern = cached


def _pt2e_int8(model: nn.Module, example: tuple[torch.Tensor], calibration: np.ndarray) -> nn.Module:
    """``model`` quantized for XNNPACK by the pt2e flow, calibrated one input at a time."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(torch.export.export(model, example).module(), xnnpack_quantizer())
    with torch.no_grad():
        for x in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)))
    return convert_pt2e(prepared)


def export_ncnn(model: nn.Module, input_shape: tuple[int, ...], *, precision: str = "fp32") -> bytes:
    """An ncnn model of ``model`` (pnnx converts its trace; fp32 weights), as the zip ``Ncnn`` loads."""
    try:
        import pnnx
    except ImportError:
        raise RuntimeError("ncnn's converter is not installed: pip install 'edgenas[ncnn]'") from None
    if precision != "fp32":
        raise ValueError(
            "ncnn models are fp32 here: ncnn quantizes with its ncnn2table/ncnn2int8 tools, "
            "which its Python package does not ship"
        )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = os.path.join(tmp, "model.pt")
        torch.jit.trace(copy.deepcopy(model).eval(), torch.zeros(input_shape)).save(traced)
        files = {k: os.path.join(tmp, f"out.{k}") for k in ("ncnnparam", "ncnnbin", "pnnxparam", "pnnxbin")}
        shape = "[" + ",".join(map(str, input_shape)) + "]f32"
        args = [pnnx.EXEC_PATH, traced, f"inputshape={shape}", "fp16=0", "pnnxpy=", "pnnxonnx=", "ncnnpy="]
        done = subprocess.run(args + [f"{k}={v}" for k, v in files.items()], capture_output=True, text=True, cwd=tmp)
        if done.returncode != 0 or not os.path.exists(files["ncnnbin"]):
            raise RuntimeError(f"pnnx could not convert the model: {(done.stderr or done.stdout)[-500:]}")
        return pack_ncnn(Path(files["ncnnparam"]).read_bytes(), Path(files["ncnnbin"]).read_bytes(), input_shape)


def export_coreml(model: nn.Module, input_shape: tuple[int, ...], *, precision: str = "fp32") -> bytes:
    """A Core ML ML program of ``model`` (inputs ``input``, outputs ``output``), as :func:`pack_folder`'s zip.

    Weights stay float32 in the file; compute is float16 (Core ML's default, what the Neural
    Engine runs). int8 is not made here (Core ML quantizes with coremltools.optimize).
    """
    try:
        import coremltools as ct
    except ImportError:
        raise RuntimeError("coremltools is not installed: pip install coremltools") from None
    if precision != "fp32":
        raise ValueError("Core ML packages are made in float here: coremltools.optimize quantizes them")
    example = torch.zeros(input_shape)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        program = torch.export.export(copy.deepcopy(model).eval(), (example,)).run_decompositions({})
        converted = ct.convert(
            program,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(input_shape))],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            minimum_deployment_target=ct.target.iOS17,
        )
        converted.save(os.path.join(tmp, "model.mlpackage"))
        return pack_folder(os.path.join(tmp, "model.mlpackage"))


def export_for(
    fmt: str,
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
) -> bytes:
    """``model`` in a runtime's format: ``onnx``, ``pte`` (ExecuTorch + XNNPACK), ``ncnn``, ``mlpackage`` (Core ML)."""
    if fmt == "onnx":
        return export_onnx(model, input_shape, precision=precision, calibration=calibration)
    if fmt == "pte":
        return export_pte(model, input_shape, precision=precision, calibration=calibration)
    if fmt == "ncnn":
        return export_ncnn(model, input_shape, precision=precision)
    if fmt == "mlpackage":
        return export_coreml(model, input_shape, precision=precision)
    raise ValueError(f"unknown model format {fmt!r}; allowed: onnx, pte, ncnn, mlpackage")


def export_quantized(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
    *,
    opset: int = OPSET,
    dynamic_batch: bool = False,
) -> bytes:
    """Export a model that quantizes itself (fake-quant ops on constant weights) as a QDQ model.

    Each fake-quant op becomes a QuantizeLinear / DequantizeLinear pair. The exporter's
    constant folding is off (it would fold each weight's fake-quant back into float);
    :func:`fold_constant_quantization` then stores the weights as int8.
    """
    data = _fp32_bytes(model, tuple(input_shape), opset, False, dynamic_batch)
    data = compact_names(fold_constant_quantization(data))
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _fold_node(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of a Cast / Identity / QuantizeLinear node whose inputs are all constant."""
    from onnx import helper

    inputs = [consts[i] for i in node.input if i]
    if node.op_type == "Identity":
        return inputs[0]
    if node.op_type == "Cast":
        to = next(a.i for a in node.attribute if a.name == "to")
        return inputs[0].astype(helper.tensor_dtype_to_np_dtype(to))
    # QuantizeLinear: round half to even, saturate to the zero point's type
    x, scale = inputs[0].astype(np.float32), inputs[1].astype(np.float32)
    zp = inputs[2] if len(inputs) > 2 else np.zeros((), np.uint8)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * x.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis] = scale.size
    info = np.iinfo(zp.dtype)
    q = np.rint(x / scale.reshape(shape)) + zp.astype(np.int64).reshape(shape if zp.ndim else [])
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def fold_constant_quantization(data: bytes) -> bytes:
    """Fold QuantizeLinear nodes of constant tensors (weights) into int8/uint8 initialisers.

    Exporters write fake-quantized weights as ``float weight -> QuantizeLinear ->
    DequantizeLinear`` (with Casts on the way); storing the quantized integers instead makes
    the file about 4x smaller and is the standard QDQ form that ONNX Runtime fuses. Rounding
    is ONNX's (half to even, saturating).
    """
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    consts = _constants(graph)
    keep, folded = [], {}
    for node in graph.node:
        foldable = node.op_type in ("Cast", "Identity", "QuantizeLinear")
        if foldable and all(i in consts for i in node.input if i):
            consts[node.output[0]] = folded[node.output[0]] = _fold_node(node, consts)
        else:
            keep.append(node)
    if not folded:
        return data
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(n for n in keep if n.op_type != "Constant" or n.output[0] in used)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items() if k in used)
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def with_metadata(data: bytes, props: dict[str, str]) -> bytes:
    """The model with ``props`` added to its ``metadata_props`` (the graph is unchanged)."""
    model = onnx.load_from_string(data)
    for key, value in props.items():
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def compact_names(data: bytes) -> bytes:
    """Rename every internal tensor to a short id and drop node names and doc strings.

    Exporters name tensors after module paths (``/blocks/blocks.3/dw/act/Clip_output_0``);
    in a small int8 model these strings outweigh the weights. The graph is unchanged.
    """
    model = onnx.load_from_string(data)
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    model.doc_string = ""
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ops an integer runtime (and ONNX Runtime's fused kernels) runs in place on their input's buffer
_IN_PLACE = {"QuantizeLinear", "DequantizeLinear", "Clip", "Relu", "HardSwish", "HardSigmoid", "Sigmoid", "Identity"}


def activation_peak(data: bytes) -> int:
    """The largest sum of activation tensors alive at once (bytes) when the graph runs in file order.

    Shapes come from ONNX shape inference (a symbolic batch counts as 1), byte widths from
    each tensor's type. A tensor lives from the node that writes it to its last reader; the
    graph input is the caller's buffer; constants and weights (initializers, ``Constant``
    nodes and what is computed from them alone) are not activations. An element-wise
    activation or a quantize/dequantize step whose input has no other reader writes in
    place, so a chain conv -> Q -> DQ -> HardSwish -> Q is one buffer of the narrowest type
    in it: an int8 buffer in a QDQ file, as an integer runtime executes it. This is the
    measurement :func:`edgenas.search_spaces.peak_activation_bytes` predicts.
    """
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
    graph = model.graph
    info = {v.name: v.type.tensor_type for v in (*graph.input, *graph.value_info, *graph.output)}
    const = {i.name for i in graph.initializer}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" or all(n in const for n in node.input if n):
            const.update(node.output)
        for n in node.input:
            readers.setdefault(n, []).append(i)
    inputs = {v.name for v in graph.input} - const
    group = {n: n for n in inputs}  # tensor -> the buffer it lives in
    for node in graph.node:
        if node.output[0] in const:
            continue
        src = node.input[0] if node.input else ""
        in_place = node.op_type in _IN_PLACE and src in group and src not in inputs and len(readers[src]) == 1
        for out in node.output:
            group[out] = group[src] if in_place else out
    width: dict[str, int] = {}
    for name, buf in group.items():
        t = info[name]
        elems = int(np.prod([d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]))
        item = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
        width[buf] = min(width.get(buf, elems * item), elems * item)
    last = {}
    for name, buf in group.items():
        last[buf] = max(last.get(buf, -1), *readers.get(name, [len(graph.node)]))
    live = {n: width[n] for n in inputs}
    peak = sum(live.values())
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out in group and group[out] not in live:
                live[group[out]] = width[group[out]]
        peak = max(peak, sum(live.values()))
        for buf in [b for b in live if last[b] <= i]:
            del live[buf]
    return peak


def save_openvino_ir(data: bytes, path: str | os.PathLike) -> Path:
    """Convert an ONNX model to OpenVINO IR: ``path`` (``.xml``) and its ``.bin``, metadata kept.

    The edgenas metadata (``metadata_props["edgenas"]``) goes into the IR's ``rt_info``
    under the same key. Float weights stay float32 (no fp16 compression: the model was
    measured and checked as it is). Both files are written under temporary names and
    renamed, the ``.bin`` first, so a reader never finds an ``.xml`` without its weights.
    """
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeError("OpenVINO is not installed: pip install 'edgenas[openvino]'") from None
    xml = Path(path)
    if xml.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {str(xml)!r}")
    xml.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(io.BytesIO(data))
    meta = next((p.value for p in onnx.load_from_string(data).metadata_props if p.key == METADATA_KEY), None)
    if meta is not None:
        model.set_rt_info(meta, [METADATA_KEY])
    with tempfile.TemporaryDirectory(dir=xml.parent) as tmp:
        ov.save_model(model, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
        os.replace(os.path.join(tmp, "model.bin"), xml.with_suffix(".bin"))
        os.replace(os.path.join(tmp, "model.xml"), xml)
    return xml
