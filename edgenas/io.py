"""Atomic file writes (a temp file in the target's folder, fsync, then rename) and the one
container of several files a runtime loads as one model (an ncnn ``.param`` + ``.bin``).

A reader (or a run killed with SIGKILL mid-write) sees either the old file or the new one,
never half of one. Only the standard library is used, so device-side code can import it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "pack_folder",
    "pack_ncnn",
    "read_json",
    "unpack_mlpackage",
    "unpack_ncnn",
]

NCNN_PARAM, NCNN_BIN, NCNN_SHAPE = "model.param", "model.bin", "input_shape.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Load JSON, turning a missing or corrupt file into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc


def file_digest(path: str | os.PathLike) -> str:
    """A short digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def json_digest(data: Any) -> str:
    """A short digest of ``data`` as sorted JSON (values JSON cannot hold are written with ``str``)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pack_ncnn(param: bytes, weights: bytes, input_shape: list[int] | tuple[int, ...]) -> bytes:
    """An ncnn model as one blob (a zip): its ``.param``, its ``.bin`` and its input shape."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(NCNN_PARAM, param)
        z.writestr(NCNN_BIN, weights)
        z.writestr(NCNN_SHAPE, json.dumps(list(input_shape)))
    return buf.getvalue()


def unpack_ncnn(data: bytes, folder: str | os.PathLike) -> tuple[str, str, list[int]]:
    """The files of :func:`pack_ncnn`'s blob written into ``folder``: (``.param`` path, ``.bin`` path, input shape)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(folder, members=[NCNN_PARAM, NCNN_BIN])
        shape = json.loads(z.read(NCNN_SHAPE))
    return os.path.join(folder, NCNN_PARAM), os.path.join(folder, NCNN_BIN), shape


def pack_folder(folder: str | os.PathLike) -> bytes:
    """A folder (a Core ML ``.mlpackage``) as one blob: a zip of its files, paths relative to it."""
    buf = io.BytesIO()
    root = Path(folder)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            z.write(path, path.relative_to(root).as_posix())
    return buf.getvalue()


def unpack_mlpackage(data: bytes, folder: str | os.PathLike) -> str:
    """:func:`pack_folder`'s blob of a Core ML package written as ``folder/model.mlpackage``; its path."""
    path = os.path.join(folder, "model.mlpackage")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(path)
    return path
