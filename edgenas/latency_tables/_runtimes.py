"""Runtimes that run a model: ONNX Runtime; OpenVINO, ExecuTorch and ncnn where installed.
numpy and the runtime only.

A :class:`Runtime` loads a model (bytes in its :attr:`~Runtime.format`) into a ready-to-call
runner with a fixed random input; the timing protocol (:func:`edgenas.latency_tables.time_models`) only calls
runners, so every runtime is timed the same way, and a table's header names the runtime
and version it was measured with (``runtime``). Block costs, and so the best arch, differ
between runtimes on the same chip: each runtime gets its own tables.

- ``onnxruntime``: a session with execution providers (CPU, CUDA, QNN, ...), sequential,
  all graph optimizations, ``threads`` intra-op threads.
- ``openvino``: a model compiled for an OpenVINO device (``CPU``, ``GPU``, ``NPU``) with
  the latency hint, one stream, ``threads`` inference threads, and float32 inference for
  float models (OpenVINO would otherwise run them in bfloat16 on CPUs that have it); QDQ
  int8 models run in int8. Optional: ``pip install 'edgenas[openvino]'``.
- ``executorch``: an ExecuTorch program (``.pte``) whose graph is delegated to XNNPACK, the
  CPU kernel library Android and iOS apps run (LiteRT's default CPU kernels too), on
  ``threads`` threads of its thread pool. Its Python bindings take torch tensors, so this
  one runtime imports torch on the device (an app links the C++ runtime instead).
  Optional: ``pip install 'edgenas[executorch]'``.
- ``coreml``: a Core ML ``.mlpackage`` (ML program, float16 compute as the Neural Engine runs it,
  sent as a zip of the package), predicted by coremltools with every compute unit allowed. macOS
  only: elsewhere it is refused in one line (the host converts; a Mac's agent times).
- ``ncnn``: an ncnn model (``.param`` + ``.bin``, sent as one zip with its input shape)
  on ``threads`` threads. fp32 only: ncnn quantizes with its ``ncnn2table``/``ncnn2int8``
  tools, which its Python package does not ship. Optional: ``pip install 'edgenas[ncnn]'``.

The ONNX models are made by :func:`edgenas.export.export_onnx`; the others by
:func:`edgenas.export.export_for` (on the host, with torch).
"""

from __future__ import annotations

import io
import os
import platform
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgenas.io import unpack_mlpackage, unpack_ncnn

__all__ = [
    "DEVICES",
    "FORMATS",
    "CoreML",
    "PROVIDER_ALIASES",
    "RUNTIMES",
    "ExecuTorch",
    "Ncnn",
    "OnnxRuntime",
    "OpenVino",
    "Runtime",
    "cpu_name",
    "expected_providers",
    "make_runtime",
    "openvino_device",
    "resolve_providers",
]

RUNTIMES = ("onnxruntime", "openvino", "executorch", "ncnn", "coreml")
# the format of the bytes each runtime loads (and of the file finalize deploys for it)
FORMATS = {"onnxruntime": "onnx", "openvino": "onnx", "executorch": "pte", "ncnn": "ncnn", "coreml": "mlpackage"}
OPENVINO_DEVICES = ("CPU", "GPU", "NPU")
OPENVINO_MISSING = "OpenVINO is not installed: pip install 'edgenas[openvino]' (or pip install openvino)"
EXECUTORCH_MISSING = "ExecuTorch is not installed: pip install 'edgenas[executorch]'"
NCNN_MISSING = "ncnn is not installed: pip install 'edgenas[ncnn]'"
COREML_ELSEWHERE = (
    "Core ML runs models on macOS and iOS only: start `edgenas agent --runtime coreml` on a Mac "
    "(pip install coremltools numpy) and use the device agent://MAC:PORT"
)


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _input(shape: Sequence[Any], dtype: type = np.float32) -> np.ndarray:
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]  # a dynamic batch is timed at 1
    return np.random.default_rng(0).standard_normal(dims).astype(dtype)


class Runtime(ABC):
    """Loads models into runners; says what it is (:meth:`fingerprint`)."""

    name: str
    threads: int

    @property
    def format(self) -> str:
        """The format of the models it loads: ``onnx``, ``pte`` (ExecuTorch) or ``ncnn``."""
        return FORMATS[self.name]

    @abstractmethod
    def load(self, model: bytes) -> Callable[[], Any]:
        """A runner: one inference of ``model`` (bytes in :attr:`format`) on a fixed random input per call."""

    def version(self) -> str:
        """The runtime's version: its Python package's, where the package is named as the runtime."""
        from importlib.metadata import version

        return version(self.name)

    @property
    @abstractmethod
    def providers(self) -> list[str]:
        """Where it runs: ONNX Runtime's execution providers, or the OpenVINO device."""

    def fingerprint(self) -> dict[str, Any]:
        """The device and session settings; every table header keeps it (``runtime`` is checked)."""
        import onnxruntime as ort

        return {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}",
            "runtime": f"{self.name} {self.version()}",
            "format": self.format,
            # the int8 ONNX models are quantized by ONNX Runtime's quantizer whatever runs them
            "onnxruntime": ort.__version__,
            "providers": self.providers,
            "threads": self.threads,
            **self._extra(),
        }

    def _extra(self) -> dict[str, Any]:
        return {}


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, providers: Sequence[str], threads: int = 1):
        self._providers, self.threads = list(providers), threads

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def _extra(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"available_providers": list(ort.get_available_providers())}

    def session(self, model: bytes | str, profile_prefix: str | None = None):
        """An ONNX Runtime session (of ONNX bytes or a file) with these execution providers and intra-op threads;
        with ``profile_prefix``, profiling each node into files of that prefix."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        if profile_prefix:
            so.enable_profiling, so.profile_file_prefix = True, profile_prefix
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(model, so, providers=self._providers)

    def load(self, model: bytes) -> Callable[[], Any]:
        session = self.session(model)
        inp = session.get_inputs()[0]
        feed = {inp.name: _input(inp.shape, np.float32 if "float" in inp.type else np.int64)}
        return lambda: session.run(None, feed)


def openvino_device(device: str) -> str:
    """The OpenVINO device of a device string: ``openvino`` (CPU) or ``openvino:CPU|GPU|NPU``."""
    _, _, name = device.partition(":")
    name = (name or "CPU").upper()
    if name.split(".")[0] not in OPENVINO_DEVICES:
        allowed = ", ".join("openvino:" + d for d in OPENVINO_DEVICES)
        raise ValueError(f"unknown OpenVINO device {name!r} in {device!r}; allowed: {allowed} (GPU.1: a second GPU)")
    return name


class OpenVino(Runtime):
    name = "openvino"

    def __init__(self, device: str = "CPU", threads: int = 1):
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError(OPENVINO_MISSING) from None
        self.core = ov.Core()
        if device not in self.core.available_devices:
            raise ValueError(
                f"OpenVINO device {device!r} is not available here; available: {self.core.available_devices}"
            )
        self.device, self.threads = device, threads

    @property
    def providers(self) -> list[str]:
        return [self.device]

    def version(self) -> str:
        import openvino as ov

        return ov.__version__.split("-")[0]

    def _extra(self) -> dict[str, Any]:
        return {
            "device_name": self.core.get_property(self.device, "FULL_DEVICE_NAME"),
            "available_devices": list(self.core.available_devices),
        }

    def compile(self, model: bytes | str):
        """The model (ONNX bytes, or the path of an ONNX file or IR ``.xml``) compiled for this device:
        latency hint, one stream, float32 for float models."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if self.device == "CPU":
            config.update(INFERENCE_NUM_THREADS=self.threads, INFERENCE_PRECISION_HINT="f32")
        source = model if isinstance(model, str) else io.BytesIO(model)
        return self.core.compile_model(self.core.read_model(source), self.device, config)

    def load(self, model: bytes) -> Callable[[], Any]:
        import openvino as ov

        compiled = self.compile(model)
        request = compiled.create_infer_request()
        inp = compiled.inputs[0]
        shape = [d.get_length() if d.is_static else 1 for d in inp.get_partial_shape()]
        request.set_input_tensor(ov.Tensor(_input(shape)))
        return request.infer


class ExecuTorch(Runtime):
    """ExecuTorch programs delegated to XNNPACK (see the module docstring)."""

    name = "executorch"

    def __init__(self, threads: int = 1):
        try:
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime as EtRuntime
        except ImportError:
            raise RuntimeError(EXECUTORCH_MISSING) from None
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's pool: the only way its bindings offer
        self._runtime, self.threads = EtRuntime.get(), threads

    @property
    def providers(self) -> list[str]:
        return ["XnnpackBackend"]

    def method(self, model: bytes | str):
        """The ``forward`` method of a program (``.pte`` bytes or a path), ready to execute."""
        return self.program(model).load_method("forward")

    def program(self, model: bytes | str, *, etdump: bool = False):
        """A loaded program; ``etdump``: its event tracer on (each operator's time, written by the program's
        ``write_etdump_result_to_file``)."""
        return self._runtime.load_program(model, enable_etdump=etdump)

    @staticmethod
    def infer(method, x: np.ndarray) -> np.ndarray:
        """The first output of ``method`` on one float32 input."""
        import torch  # ExecuTorch's Python bindings execute on torch tensors (an app links its C++ runtime)

        return method.execute([torch.from_numpy(np.ascontiguousarray(x))])[0].numpy()

    def load(self, model: bytes) -> Callable[[], Any]:
        method = self.method(model)
        x = _input(list(method.metadata.input_tensor_meta(0).sizes()))
        return lambda: self.infer(method, x)


class Ncnn(Runtime):
    """ncnn models (see the module docstring): the blob of :func:`edgenas.io.pack_ncnn`."""

    name = "ncnn"

    def __init__(self, threads: int = 1):
        try:
            import ncnn  # noqa: F401
        except ImportError:
            raise RuntimeError(NCNN_MISSING) from None
        self.threads = threads

    @property
    def providers(self) -> list[str]:
        return ["CPU"]

    def net(self, param: str, weights: str):
        """An ``ncnn.Net`` of a ``.param`` and a ``.bin`` file, on :attr:`threads` threads, fp32."""
        import ncnn

        net = ncnn.Net()
        net.opt.num_threads = self.threads
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        if net.load_param(param) or net.load_model(weights):
            raise RuntimeError(f"ncnn could not load {param} / {weights}")
        return net

    @staticmethod
    def infer(net, x: np.ndarray) -> np.ndarray:
        """The logits (1, classes) of ``net`` on one float32 input (1, C, H, W)."""
        import ncnn

        # a Mat of an array borrows its memory (the array must outlive the clone), and an in-place first
        # layer on a borrowed Mat crashes ncnn: the network gets an owned copy
        image = np.ascontiguousarray(x[0])
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(image).clone())
        # the output lives in the extractor's memory: copied out, as ONNX Runtime's outputs are
        return np.array(ex.extract("out0")[1]).reshape(1, -1)

    def load(self, model: bytes) -> Callable[[], Any]:
        with tempfile.TemporaryDirectory() as d:
            param, weights, shape = unpack_ncnn(model, d)
            net = self.net(param, weights)
        x = _input(shape)
        return lambda: self.infer(net, x)


class CoreML(Runtime):
    """Core ML packages through coremltools (macOS only; see the module docstring)."""

    name = "coreml"

    def __init__(self, threads: int = 1):
        if platform.system() != "Darwin":
            raise RuntimeError(COREML_ELSEWHERE)
        try:
            import coremltools  # noqa: F401
        except ImportError:
            raise RuntimeError("coremltools is not installed: pip install coremltools") from None
        self.threads = threads  # Core ML chooses its own threads; recorded for the table header

    @property
    def providers(self) -> list[str]:
        return ["ALL"]  # CPU, GPU and Neural Engine: Core ML places each layer

    def load(self, model: bytes) -> Callable[[], Any]:
        import coremltools as ct

        folder = tempfile.mkdtemp(prefix="edgenas-coreml-")  # the package must outlive the runner
        path = unpack_mlpackage(model, folder)
        ml = ct.models.MLModel(path, compute_units=ct.ComputeUnit.ALL)
        spec = ml.get_spec().description.input[0]
        feed = {spec.name: _input(list(spec.type.multiArrayType.shape))}
        return lambda: ml.predict(feed)


DEVICES = (
    "'local-cpu', 'local' (with providers), 'openvino[:CPU|GPU|NPU]', 'executorch', 'ncnn', 'coreml' (macOS), "
    "'agent://HOST:PORT'"
)


# Short names accepted on the command line for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def resolve_providers(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """Map short or full provider names to ONNX Runtime's, refusing unavailable ones."""
    out = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ValueError(
                f"execution provider {name!r} is not available here; available: {list(available)} "
                f"(short names: {sorted(PROVIDER_ALIASES)})"
            )
        out.append(full)
    if not out:
        raise ValueError(f"at least one execution provider is needed; available: {list(available)}")
    return out


def make_runtime(device: str, *, threads: int = 1, providers: Sequence[str] = ("cpu",)) -> Runtime:
    """The in-process runtime of a device string: ``local-cpu``, ``local`` (with ``providers``),
    ``openvino`` or ``openvino:CPU|GPU|NPU``, ``executorch`` (``executorch:xnnpack``), ``ncnn``."""
    import onnxruntime as ort

    if device in ("local-cpu", "local"):
        chosen = providers if device == "local" else ("cpu",)
        return OnnxRuntime(resolve_providers(chosen, ort.get_available_providers()), threads)
    if _is_openvino(device):
        return OpenVino(openvino_device(device), threads)
    if device in ("executorch", "executorch:xnnpack"):
        return ExecuTorch(threads)
    if device == "ncnn":
        return Ncnn(threads)
    if device == "coreml":
        return CoreML(threads)
    raise ValueError(f"unknown device {device!r}; allowed: {DEVICES}")


def _is_openvino(device: str) -> bool:
    return device == "openvino" or device.startswith("openvino:")


def expected_providers(device: str, providers: Sequence[str]) -> list[str]:
    """What a table measured on ``device`` records as its providers (for checking a table against a config)."""
    if _is_openvino(device):
        return [openvino_device(device)]
    if device in ("executorch", "executorch:xnnpack"):
        return ["XnnpackBackend"]
    if device == "ncnn":
        return ["CPU"]
    if device == "coreml":
        return ["ALL"]
    return [PROVIDER_ALIASES.get(p.lower(), p) for p in (providers if device == "local" else ("cpu",))]
