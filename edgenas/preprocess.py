"""The network's input from uint8 images in numpy alone: what training computes, for deployment.

``to_input`` reproduces :func:`edgenas.data.prepare` (channels matched, bilinear resize with
antialiasing when shrinking, as ``torch.nn.functional.interpolate`` computes it,
normalisation) without torch, so ``edgenas predict`` runs an exported model with its runtime
alone. The preprocessing an exported model needs is stored in the model
(:func:`preprocessing_metadata`).
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["METADATA_KEY", "preprocessing_metadata", "read_metadata", "resize_bilinear", "to_input"]

METADATA_KEY = "edgenas"  # the ONNX metadata_props key holding the JSON below

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) interpolation matrix of torch's bilinear resize (align_corners=False)."""
    scale = in_size / out_size
    w = np.zeros((out_size, in_size), dtype=np.float64)
    if scale > 1:  # shrinking: antialiased triangle filter over `scale` input pixels (torch antialias=True)
        for i in range(out_size):
            center = scale * (i + 0.5)
            lo = max(int(center - scale + 0.5), 0)
            hi = min(int(center + scale + 0.5), in_size)
            taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / scale))
            w[i, lo:hi] = taps / taps.sum()
        return w
    for i in range(out_size):  # growing: plain bilinear with half-pixel centres, clamped at the edges
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        w[i, i0] += 1.0 - frac
        w[i, i1] += frac
    return w


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Resize float images (N, C, H, W) to (N, C, size, size) as training does."""
    if x.shape[-2:] == (size, size):
        return x
    wy = _weights(x.shape[-2], size).astype(np.float32)
    wx = _weights(x.shape[-1], size).astype(np.float32)
    return np.einsum("yh,nchw,xw->ncyx", wy, x, wx, optimize=True)


def to_input(images: np.ndarray, resolution: int, channels: int, mean: float, std: float) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 network input, as :func:`edgenas.data.prepare` computes it."""
    x = images.astype(np.float32) / 255.0
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = np.repeat(x, channels, axis=1)
        elif channels == 1 and x.shape[1] == 3:
            x = (x * _GRAY.reshape(1, 3, 1, 1)).sum(1, keepdims=True)
        else:
            raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
    x = resize_bilinear(x, resolution)
    return ((x - mean) / std).astype(np.float32)


def preprocessing_metadata(
    *,
    resolution: int,
    channels: int,
    mean: float,
    std: float,
    classes: list[str],
    arch: str,
    space: str,
    data: dict,
    batch: int | str = 1,
) -> dict[str, str]:
    """ONNX ``metadata_props`` for a deployable model: everything needed to feed it and read its output.

    ``data``: the data set and split settings it was scored on (name, root, seed, val_fraction,
    test_fraction), so that ``edgenas predict`` can rebuild the same test split. ``batch``: 1,
    or ``"dynamic"`` for a symbolic batch dimension.
    """
    from edgenas import __version__

    info = {
        "input": {
            "layout": "NCHW",
            "batch": batch,
            "resolution": resolution,
            "channels": channels,
            "pixels": "uint8 / 255",
            "channel_map": "gray <-> RGB (ITU-R 601 luma)",
            "resize": "bilinear, antialiased when shrinking",
            "mean": mean,
            "std": std,
        },
        "classes": list(classes),
        "arch": arch,
        "space": space,
        "data": data,
        "edgenas": __version__,
    }
    return {METADATA_KEY: json.dumps(info)}


def read_metadata(model_path: str) -> dict:
    """The edgenas metadata of an ONNX model file, of an OpenVINO IR (``.xml``), or of an ExecuTorch ``.pte``,
    ncnn ``.param`` or Core ML ``.mlpackage`` (kept beside it in ``<file>.json``: those formats have no place
    for it); ValueError if it has none."""
    if model_path.rstrip("/").endswith((".pte", ".param", ".mlpackage")):
        sidecar = f"{model_path.rstrip('/')}.json"
        text = open(sidecar, encoding="utf-8").read() if os.path.exists(sidecar) else None
    elif model_path.endswith(".xml"):
        import openvino as ov

        model = ov.Core().read_model(model_path)
        text = model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None
    else:
        import onnx

        props = {p.key: p.value for p in onnx.load(model_path, load_external_data=False).metadata_props}
        text = props.get(METADATA_KEY)
    if text is None:
        raise ValueError(
            f"{model_path!r} carries no edgenas metadata (export it with finalize); "
            "its input size, normalisation and classes are unknown"
        )
    return json.loads(text)
