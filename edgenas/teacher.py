"""A user's teacher for distillation: a torch file, an ONNX file, or an ensemble of ONNX files.

A torch teacher is a TorchScript file (``torch.jit.save``) or a pickled module (``torch.save``)
taking the data's normalised (N, C, H, W) images and returning class logits.

An ONNX teacher runs in ONNX Runtime (a server model is usually at hand as ONNX, whatever
framework trained it). Several ONNX files teach as one ensemble: they are merged into one
graph whose output is the mean of their logits, and that graph is the teacher finalize times
and scores like any other. A file exported by edgenas (``edgenas predict`` runs it) carries
its own preprocessing: the merged graph starts with the affine map from the data's
normalisation to the file's, so it takes the same input as the student, and a file whose
classes differ from the data's is refused. A file without edgenas metadata is taken to expect
the data's normalisation. The batch axis is made symbolic where the graph allows it (one
run per batch; a graph with a fixed batch of one is run image by image).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgenas.preprocess import METADATA_KEY

__all__ = ["OnnxTeacher", "load_teacher", "merge_onnx_teachers", "teacher_files", "teacher_input_size"]

logger = logging.getLogger(__name__)


def teacher_files(path: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """The files of a teacher setting: one file, a list of them (an ensemble), or none."""
    if path is None:
        return []
    return [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]


def load_teacher(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    classes: Sequence[str] | None = None,
) -> nn.Module:
    """The teacher at ``path`` (a torch or ONNX file) or the ensemble of the ONNX files ``path`` lists.

    ``mean``/``std``: the data's normalisation (an ONNX file exported by edgenas gets its
    own through an affine map); ``classes``: the data's class names, which such a file's must
    equal. The teacher is checked on a zero batch of ``input_shape``: it must return
    ``(1, num_classes)`` logits. The pickle route runs code from the file: load only files
    you trust.
    """
    paths = teacher_files(path)
    if not paths:
        raise ValueError("finalize.teacher: an empty list (give a file, or a list of ONNX files)")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"finalize.teacher {str(p)!r} does not exist")
    onnx_files = [p for p in paths if p.suffix == ".onnx"]
    if len(paths) > 1 and len(onnx_files) < len(paths):
        others = [str(p) for p in paths if p.suffix != ".onnx"]
        raise ValueError(
            f"finalize.teacher: an ensemble is of ONNX files only, got {others}; export those to ONNX "
            "(or give one torch file alone)"
        )
    if onnx_files:
        model: nn.Module = OnnxTeacher(merge_onnx_teachers(onnx_files, input_shape, mean, std, classes))
        name = ", ".join(str(p) for p in paths)
    else:
        model, name = _load_torch(paths[0]), str(paths[0])
    model.eval()
    try:
        with torch.no_grad():
            shape = tuple(model(torch.zeros(input_shape)).shape)
    except Exception as exc:
        raise ValueError(f"finalize.teacher {name!r} does not run on input of shape {input_shape}: {exc}") from exc
    if shape != (1, num_classes):
        raise ValueError(
            f"finalize.teacher {name!r} returns shape {shape}; expected (1, {num_classes}) logits "
            f"for input {input_shape}"
        )
    return model


def _load_torch(p: Path) -> nn.Module:
    kind = _archive_kind(p)
    try:
        if kind == "TorchScript":
            model = torch.jit.load(str(p), map_location="cpu")
        else:
            model = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types here; the message is what a user needs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = f"a {kind} file" if kind else "a model file (neither a TorchScript nor a torch.save archive)"
        raise ValueError(f"finalize.teacher {str(p)!r}: cannot load it as {what}: {first}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"finalize.teacher {str(p)!r} holds a {type(model).__name__}, not a torch model "
            "(save the module itself, or a TorchScript file)"
        )
    return model


def _archive_kind(path: Path) -> str | None:
    """ "TorchScript" (the archive holds the model's code), "torch.save", or None (not a zip archive)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return "TorchScript" if any("/code/" in n for n in z.namelist()) else "torch.save"
    except (zipfile.BadZipFile, OSError):
        return None


def merge_onnx_teachers(
    paths: Sequence[Path],
    input_shape: tuple[int, ...],
    mean: float | Sequence[float],
    std: float | Sequence[float],
    classes: Sequence[str] | None,
) -> bytes:
    """One ONNX graph: ``input`` (the data's normalisation) -> each file's logits -> their mean as ``output``."""
    members = [_member(p, input_shape, mean, std, classes) for p in paths]
    if len(members) == 1:
        return members[0].SerializeToString()
    opset = max(_opset(m) for m in members)
    nodes, inits, outs = [], [], []
    for i, m in enumerate(members):
        if _opset(m) != opset:
            m = onnx.version_converter.convert_version(m, opset)
        g = onnx.compose.add_prefix(m, f"t{i}_").graph
        for node in g.node:  # every member reads the one shared input
            node.input[:] = ["input" if n == f"t{i}_input" else n for n in node.input]
        nodes += list(g.node)
        inits += list(g.initializer)
        outs.append(f"t{i}_output")
    nodes.append(onnx.helper.make_node("Mean", outs, ["output"], name="ensemble_mean"))
    io = members[0].graph
    (x,) = [v for v in io.input if v.name == "input"]
    graph = onnx.helper.make_graph(nodes, "teacher_ensemble", [x], list(io.output), inits)
    merged = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    merged.ir_version = max(m.ir_version for m in members)
    onnx.checker.check_model(merged)
    return merged.SerializeToString()


def teacher_input_size(path: str | os.PathLike | Sequence[str | os.PathLike]) -> int | None:
    """The fixed input size of an ONNX teacher (the first file of an ensemble); None for torch or a symbolic size."""
    first = teacher_files(path)[0]
    if first.suffix != ".onnx" or not first.is_file():
        return None
    try:
        graph = onnx.load(str(first), load_external_data=False).graph
    except Exception:  # not ONNX after all: load_teacher says so in its own words
        return None
    dims = graph.input[0].type.tensor_type.shape.dim
    return dims[-1].dim_value or None if len(dims) == 4 else None


def _opset(model: onnx.ModelProto) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _member(
    path: Path,
    input_shape: tuple[int, ...],
    mean: float | Sequence[float],
    std: float | Sequence[float],
    classes: Sequence[str] | None,
) -> onnx.ModelProto:
    """One ONNX file checked against the data: its input ``input`` (the data's normalisation, a batch axis
    ``N``), its logits ``output``."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"finalize.teacher {str(path)!r}: not an ONNX file: {exc}") from exc
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"finalize.teacher {str(path)!r} has {len(inputs)} inputs and {len(graph.output)} outputs; "
            "a teacher has one image input and one logits output"
        )
    dims = [d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or any(isinstance(d, int) and d != s for d, s in zip(dims[1:], input_shape[1:])):
        raise ValueError(
            f"finalize.teacher {str(path)!r} takes input {dims}; the data gives {list(input_shape)} "
            "(finalize.teacher_resolution sets the size it gets)"
        )
    meta = _edgenas_meta(model)
    if meta and classes is not None and list(meta["classes"]) != list(classes):
        raise ValueError(
            f"finalize.teacher {str(path)!r} predicts the classes {meta['classes']}; the data has {list(classes)}"
        )
    del model.metadata_props[:]
    del graph.value_info[:]  # shapes inferred for a batch of one would pin it
    _rename(graph, inputs[0].name, "input")
    _rename(graph, graph.output[0].name, "output")
    if meta:
        _renormalise(graph, (mean, std), (meta["input"]["mean"], meta["input"]["std"]))
    for v in (inputs[0], graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


def _edgenas_meta(model: onnx.ModelProto) -> dict | None:
    text = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    return json.loads(text) if text else None


def _renormalise(graph: onnx.GraphProto, data: tuple, own: tuple) -> None:
    """Prepend ``input * a + b``: the data's normalised input becomes the one the file was trained on."""
    d_mean, d_std, o_mean, o_std = (np.asarray(v, dtype=np.float64).reshape(1, -1, 1, 1) for v in (*data, *own))
    a, b = d_std / o_std, (d_mean - o_mean) / o_std
    if np.allclose(a, 1.0) and np.allclose(b, 0.0):
        return
    for node in graph.node:
        node.input[:] = ["input_renormalised" if n == "input" else n for n in node.input]
    graph.initializer.extend(
        [
            onnx.numpy_helper.from_array(a.astype(np.float32), "input_scale"),
            onnx.numpy_helper.from_array(b.astype(np.float32), "input_shift"),
        ]
    )
    shift = onnx.helper.make_node("Add", ["input_scaled", "input_shift"], ["input_renormalised"], name="renormalise")
    graph.node.insert(0, shift)
    graph.node.insert(0, onnx.helper.make_node("Mul", ["input", "input_scale"], ["input_scaled"], name="rescale"))


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Tensor ``old`` is called ``new`` everywhere in the graph."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for v in (*graph.input, *graph.output):
        if v.name == old:
            v.name = new


class OnnxTeacher(nn.Module):
    """An ONNX graph (one file or a merged ensemble) as a torch module, run by ONNX Runtime on the CPU.

    Inputs on any device come back as logits on that device; no gradient flows through it.
    Its state is a digest of the graph, so records that digest a teacher's weights tell two
    ONNX teachers apart.
    """

    def __init__(self, model: bytes):
        super().__init__()
        self.model = model
        self.register_buffer("graph_sha256", torch.tensor(list(hashlib.sha256(model).digest()), dtype=torch.uint8))
        self._session = None
        self._batched: bool | None = None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            from edgenas.latency_tables import OnnxRuntime

            self._session = OnnxRuntime(["CPUExecutionProvider"], threads=torch.get_num_threads()).session(self.model)
        if self._batched is None and len(x) > 1:  # decided on the first batch of several
            self._batched = self._runs_batched(x)
            if not self._batched:
                logger.warning("teacher: its ONNX graph runs one image at a time (a fixed batch axis); slower")
        if self._batched or len(x) == 1:
            return self._session.run(["output"], {"input": x})[0]
        return np.concatenate([self._session.run(["output"], {"input": x[i : i + 1]})[0] for i in range(len(x))])

    def _runs_batched(self, x: np.ndarray) -> bool:
        try:
            whole = self._session.run(["output"], {"input": x[:2]})[0]
        except Exception:  # onnxruntime's own errors: a shape fixed inside the graph
            return False
        one = self._session.run(["output"], {"input": x[:1]})[0]
        return whole.shape[0] == 2 and np.allclose(whole[:1], one, atol=1e-4)

    def export(self, dynamic_batch: bool = True) -> bytes:
        """The graph as a file to time and score: a symbolic batch, or a batch of one (OpenVINO's choice)."""
        if dynamic_batch:
            return self.model
        model = onnx.load_from_string(self.model)
        for v in (*model.graph.input, *model.graph.output):
            if v.name in ("input", "output"):
                v.type.tensor_type.shape.dim[0].dim_value = 1
        return model.SerializeToString()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self._run(batch)).to(x.device)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None  # a session does not copy or pickle; it is made again on first use
        return state
