"""Where torch work runs: the device (CPU, CUDA, MPS), its memory layout and its precision.

One :class:`Accelerator` is made from a device string (``auto``, ``cpu``, ``cuda``,
``cuda:N``, ``mps``) and is passed to every loop that trains or evaluates (supernet
training, finetunes, BN recalibration, accuracy). What it turns on was chosen by
measurement, per device type:

- **channels_last** on CPU and CUDA: the depthwise convolutions of these nets ran 1.8-1.9x
  faster in NHWC on 2-core CPUs (FINDINGS), and NHWC is what cuDNN's tensor-core kernels
  want. Not on MPS, where it has not been shown to pay.
- **mixed precision** on CUDA only (bf16 where the GPU supports it, else fp16 with a
  gradient scaler). bf16 autocast on CPU ran *slower* (92 vs 139 images/s, AVX-512-bf16
  EPYC), so the CPU trains in fp32.

Data stay uint8 on the host and are converted per batch on the device
(:func:`edgenas.data.batches`), so a GPU never waits on float conversion or augmentation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from edgenas.config import DEVICE_CHOICES, check_device

__all__ = ["DEVICE_CHOICES", "Accelerator", "check_device", "on_device", "resolve_device", "seeded"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device for ``spec``: ``auto`` takes CUDA, then MPS, then the CPU.

    Raises ValueError naming the value when it is malformed or the device is not there.
    """
    check_device(spec, "device")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r}: this torch build sees no CUDA GPU (torch {torch.__version__}); use 'cpu' or 'auto'"
            )
        index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    if spec == "mps" and not _mps_available():
        raise ValueError("device 'mps': Apple's Metal backend is not available here; use 'cpu' or 'auto'")
    return torch.device(spec)


@dataclass(frozen=True)
class Accelerator:
    """A device with the layout and precision that pay on it; see the module docstring.

    ``amp_dtype`` is the autocast dtype (None: fp32). Build one with :meth:`create`.
    """

    device: torch.device
    channels_last: bool
    amp_dtype: torch.dtype | None = None

    @classmethod
    def create(cls, spec: str = "auto", *, amp: bool = True) -> Accelerator:
        """The accelerator for a device string; ``amp=False`` keeps fp32 even on CUDA (e.g. for QAT)."""
        device = resolve_device(spec)
        amp_dtype = None
        if amp and device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device=device, channels_last=device.type in ("cpu", "cuda"), amp_dtype=amp_dtype)

    @classmethod
    def cpu(cls) -> Accelerator:
        return cls.create("cpu")

    @classmethod
    def of(cls, model: nn.Module) -> Accelerator:
        """An fp32 accelerator for the device ``model``'s parameters are on (evaluation feeds it there)."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        return cls(device=device, channels_last=device.type in ("cpu", "cuda"))

    def fp32(self) -> Accelerator:
        """The same device without mixed precision."""
        return Accelerator(self.device, self.channels_last, None)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def module(self, model: nn.Module) -> nn.Module:
        """``model`` moved to the device in its memory format (in place, as ``nn.Module.to`` is)."""
        return model.to(device=self.device, memory_format=self.memory_format)

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch on the device in the memory format (4-d tensors only get a layout)."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def describe(self) -> dict:
        """What a manifest records: device, its name, layout, precision, torch threads."""
        name = "cpu"
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "mps":
            name = "Apple MPS"
        else:
            from edgenas.latency_tables import cpu_name

            name = cpu_name()
        amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return {
            "device": str(self.device),
            "name": name,
            "channels_last": self.channels_last,
            "precision": amp,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }


@contextlib.contextmanager
def on_device(model: nn.Module, accel: Accelerator) -> Iterator[nn.Module]:
    """Run a block with ``model`` on the accelerator; it is back on the CPU (NCHW) afterwards.

    Saved checkpoints, pruning and ONNX export work on CPU modules, so every loop that
    borrows the device hands the model back where it found it.
    """
    accel.module(model)
    try:
        yield model
    finally:
        model.to(device="cpu", memory_format=torch.contiguous_format)


@contextlib.contextmanager
def seeded(seed: int, accel: Accelerator | None = None) -> Iterator[None]:
    """Torch's global generators seeded with ``seed`` inside the block and restored after it.

    Weight initialisation and dropout draw from torch's global generators; a library call
    seeds them for its own work without changing the caller's random state.
    """
    cuda = accel is not None and accel.device.type == "cuda"
    devices = [accel.device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
