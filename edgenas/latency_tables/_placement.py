"""Which kernel ran each node: the placement report of a model on a runtime. numpy and the runtime only.

One row per node (per delegate for ExecuTorch) as the runtime itself reports it:

- ONNX Runtime: its profiler's node events: the execution provider that ran the node, the
  precision of its output, its mean time over ``runs`` runs. A node on another provider than
  the first one asked for is a fallback (e.g. CPU under CUDA or QNN).
- OpenVINO: the compiled model's performance counters: the primitive (``jit_avx2_I8``,
  ``ref_any_f32``, ...), its precision and time; a reference (``ref``) primitive is a
  fallback to OpenVINO's slow generic kernels. Nodes fused into others are left out.
- ExecuTorch: the program's event trace (ETDump): each operator XNNPACK ran inside a delegate
  call (its name says the kernel and precision, e.g. ``Convolution (NHWC, F32) DWConv``, or
  ``IGEMM`` where XNNPACK has no depthwise kernel for the size and runs a grouped GEMM), the
  delegate call's own time beyond its operators, and each portable kernel (a fallback:
  ExecuTorch's reference C++ kernels, outside XNNPACK), with times. A runtime built without
  the event tracer gives the program's instructions only, untimed.
- ncnn: the layers of its ``.param`` (ncnn runs every layer itself). No times.

Float nodes inside an int8 model (an activation ONNX Runtime has no int8 kernel for, with a
DequantizeLinear before and a QuantizeLinear after it) are what make an int8 file slower
than its fp32 one: :func:`placement_summary` counts them and the time they and the
conversions take.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from edgenas.io import unpack_ncnn
from edgenas.latency_tables._runtimes import ExecuTorch, Ncnn, OnnxRuntime, OpenVino, Runtime, _input

__all__ = ["placement", "placement_summary"]

_INT8_TYPES = ("int8", "uint8")


def placement(runtime: Runtime, model: bytes, *, runs: int = 20) -> list[dict[str, Any]]:
    """Per node: ``node``, ``op``, ``executed_by``, ``precision``, ``us`` (mean per run, None where the
    runtime does not time nodes) and ``fallback`` (see the module docstring)."""
    if isinstance(runtime, OnnxRuntime):
        return _onnxruntime(runtime, model, runs)
    if isinstance(runtime, OpenVino):
        return _openvino(runtime, model, runs)
    if isinstance(runtime, ExecuTorch):
        return _executorch(runtime, model, runs)
    if isinstance(runtime, Ncnn):
        return _ncnn(model)
    raise ValueError(f"no placement report for runtime {runtime.name!r}")


def _onnxruntime(runtime: OnnxRuntime, model: bytes, runs: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        session = runtime.session(model, profile_prefix=os.path.join(tmp, "profile"))
        inp = session.get_inputs()[0]
        feed = {inp.name: _input(inp.shape)}
        for _ in range(runs + 1):  # the first run warms up: not counted
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    times: dict[str, list[float]] = defaultdict(list)
    first: dict[str, dict] = {}
    for e in events:
        times[e["name"]].append(e["dur"])
        first.setdefault(e["name"], e)
    asked = runtime.providers[0]
    rows = []
    for name, e in first.items():
        out_types = [k for shape in e["args"].get("output_type_shape", []) for k in shape]
        rows.append(
            {
                "node": name.removesuffix("_kernel_time"),
                "op": e["args"].get("op_name", "?"),
                "executed_by": e["args"].get("provider", "?"),
                "precision": _precision(out_types),
                "us": float(np.mean(times[name][-runs:])),
                "fallback": e["args"].get("provider") != asked,
            }
        )
    return rows


def _precision(types: list[str]) -> str:
    """A node's precision from ONNX Runtime's names of its output types."""
    if any(t in _INT8_TYPES for t in types):
        return "int8"
    return {"float": "fp32", "float16": "fp16"}.get(types[0], types[0]) if types else "?"


def _openvino(runtime: OpenVino, model: bytes, runs: int) -> list[dict[str, Any]]:
    import io

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "PERF_COUNT": True}
    if runtime.device == "CPU":
        config.update(INFERENCE_NUM_THREADS=runtime.threads, INFERENCE_PRECISION_HINT="f32")
    compiled = runtime.core.compile_model(runtime.core.read_model(io.BytesIO(model)), runtime.device, config)
    request = compiled.create_infer_request()
    shape = [d.get_length() if d.is_static else 1 for d in compiled.inputs[0].get_partial_shape()]
    total: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: _input(shape)})
        for info in request.get_profiling_info():
            total[info.node_name] += info.real_time.total_seconds() * 1e6
    rows = []
    for info in request.get_profiling_info():
        if info.status.name != "EXECUTED":  # fused into another node, or the input/output
            continue
        kind, _, precision = info.exec_type.rpartition("_")
        rows.append(
            {
                "node": info.node_name,
                "op": info.node_type,
                "executed_by": info.exec_type,
                "precision": {"I8": "int8", "U8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(
                    precision, precision
                ),
                "us": total[info.node_name] / runs,
                "fallback": kind.startswith("ref"),
            }
        )
    return rows


def _executorch(runtime: ExecuTorch, model: bytes, runs: int) -> list[dict[str, Any]]:
    instructions = _executorch_instructions(model)
    events = _executorch_events(runtime, model, runs)
    if events is None:
        return instructions
    backends = iter([r["executed_by"] for r in instructions if not r["fallback"]])
    rows: list[dict[str, Any]] = []
    inside: list[dict[str, Any]] = []  # the operators of the delegate call that ends next
    for name, delegated, us in events:
        if delegated:
            op = name.split(" #")[0]
            inside.append(_row(name, op, "?", _xnnpack_precision(op), False, us))
        elif name == "DELEGATE_CALL":
            backend = next(backends, "delegate")
            for r in inside:
                r["executed_by"] = backend
            own = max(0.0, us - sum(r["us"] for r in inside))
            rows += [
                *inside,
                _row(f"delegate call {len(rows)}", "delegate call (beyond its operators)", backend, "?", False, own),
            ]
            inside = []
        elif name.startswith("native_call_"):
            op = name.removeprefix("native_call_").removesuffix(".out")
            rows.append(_row(f"kernel {len(rows)}", op, "portable kernel", "?", True, us))
        # OPERATOR_CALL (a portable kernel with its dispatch) and Method::execute (the whole run) hold the rest
    return rows


def _executorch_events(runtime: ExecuTorch, model: bytes, runs: int) -> list[tuple[str, bool, float]] | None:
    """(name, inside a delegate, mean us over ``runs`` after a warm-up) per event of one run, in order; None
    where the runtime was built without its event tracer or its devtools (which read the trace) are missing."""
    try:
        from executorch.devtools import Inspector
    except ImportError:  # a runtime-only install: the instructions, untimed
        return None

    program = runtime.program(model, etdump=True)
    method = program.load_method("forward")
    x = _input(list(method.metadata.input_tensor_meta(0).sizes()))
    for _ in range(runs + 1):
        runtime.infer(method, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.etdp")
        try:
            program.write_etdump_result_to_file(path, os.path.join(tmp, "debug.bin"))
            with warnings.catch_warnings():  # no tensors were recorded (debug_buffer_size 0): times only
                warnings.simplefilter("ignore")
                blocks = Inspector(etdump_path=path).event_blocks
        except Exception:  # no event tracer in this build: nothing was recorded
            return None
    execute = [b for b in blocks if b.name == "Execute"]
    if not execute:
        return None
    return [
        (e.name, bool(e.is_delegated_op), float(np.mean(e.perf_data.raw[1:])) * 1000.0)
        for e in execute[0].events
        if e.perf_data is not None
    ]


def _xnnpack_precision(op: str) -> str:
    """An XNNPACK operator's precision from its name's data types, e.g. ``Convolution (NHWC, QC8) IGEMM``."""
    types = op.partition("(")[2].partition(")")[0].split(", ")
    if any(t.startswith("Q") for t in types):
        return "int8"
    return "fp32" if "F32" in types else "fp16" if "F16" in types else "?"


def _executorch_instructions(model: bytes) -> list[dict[str, Any]]:
    """The program's instructions: a call into a delegate, or a portable kernel (untimed)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(model)
    plan = getattr(program, "program", program).execution_plan[0]
    rows = []
    for i, instruction in enumerate(plan.chains[0].instructions):
        args, kind = instruction.instr_args, type(instruction.instr_args).__name__
        if kind == "DelegateCall":
            backend = plan.delegates[args.delegate_index].id
            rows.append(_row(f"delegate {args.delegate_index}", "delegate", backend, "?", False))
        elif kind == "KernelCall":
            op = plan.operators[args.op_index].name
            rows.append(_row(f"instruction {i}", op, "portable kernel", "?", True))
    return rows


def _ncnn(model: bytes) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        param, _, _ = unpack_ncnn(model, tmp)
        with open(param, encoding="utf-8") as f:
            layers = [line.split() for line in f.read().splitlines()[2:] if line.strip()]
    return [_row(name, op, "ncnn", "fp32", False) for op, name, *_ in layers if op != "Input"]


def _row(
    node: str, op: str, executed_by: str, precision: str, fallback: bool, us: float | None = None
) -> dict[str, Any]:
    return dict(node=node, op=op, executed_by=executed_by, precision=precision, us=us, fallback=fallback)


def placement_summary(rows: list[dict[str, Any]], *, top: int = 5) -> dict[str, Any]:
    """Nodes and time per executor, the fallbacks, the float nodes of an int8 model and the conversions'
    time, and the op types that cost most."""
    timed = all(r["us"] is not None for r in rows)
    by_executor: dict[str, dict[str, float]] = defaultdict(lambda: {"nodes": 0, "us": 0.0})
    by_op: dict[str, float] = defaultdict(float)
    for r in rows:
        by_executor[r["executed_by"]]["nodes"] += 1
        by_executor[r["executed_by"]]["us"] += r["us"] or 0.0
        by_op[r["op"]] += r["us"] or 0.0
    int8 = any(r["precision"] == "int8" for r in rows)
    conversions = ("QuantizeLinear", "DequantizeLinear", "FakeQuantize", "Convert", "Reorder")

    def converts(r: dict[str, Any]) -> bool:  # XNNPACK names its ops with their layout: "Convert (NC)"
        return r["op"].split(" (")[0] in conversions

    compute = [r for r in rows if not converts(r)]
    return {
        "nodes": len(rows),
        "timed": timed,
        "total_us": sum(r["us"] or 0.0 for r in rows) if timed else None,
        "by_executor": dict(by_executor),
        "fallbacks": [f"{r['node']} ({r['op']}, {r['executed_by']})" for r in rows if r["fallback"]],
        "float_nodes_in_int8": sum(r["precision"] not in ("int8", "?") for r in compute) if int8 else 0,
        "conversion_us": sum(r["us"] or 0.0 for r in rows if converts(r)) if timed else None,
        "costliest_ops": sorted(by_op.items(), key=lambda kv: -kv[1])[:top] if timed else [],
    }
