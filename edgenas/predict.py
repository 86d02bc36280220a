"""Run an exported model with its runtime alone: ``edgenas predict MODEL TARGET``.

MODEL: an ONNX file (run by ONNX Runtime), an OpenVINO IR ``.xml`` (run by OpenVINO), an
ExecuTorch program ``.pte`` (run by ExecuTorch with XNNPACK), an ncnn ``.param`` (with its
``.bin``, run by ncnn) or a Core ML ``.mlpackage`` (run by Core ML, on macOS).

The model carries its preprocessing, classes and the data it was scored on
(:mod:`edgenas.preprocess`), so nothing else is needed and torch is never imported. TARGET:

- an image file, or a folder of image files: the top classes of each image;
- the data set the model was trained on (its name or path, as the run's ``data.name``):
  accuracy on the test split the model card reports, rebuilt from the stored split settings;
- any other labelled data (an image folder ``ROOT/<class>/<image>``, a ``.npz``, a built-in
  name): accuracy on all of it, its classes matched to the model's by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas.data import IMAGE_SUFFIXES, ImageData, open_image
from edgenas.preprocess import read_metadata, to_input

__all__ = ["Model", "accuracy_on", "predict_images", "read_images", "top1"]


@dataclass
class Model:
    """A model ready to run (ONNX Runtime for ``.onnx``, OpenVINO on its CPU for ``.xml``, ExecuTorch for
    ``.pte``, ncnn for ``.param``) and its metadata.

    ``forward(x)``: logits of an already preprocessed float32 batch of one; :meth:`logits`
    preprocesses uint8 images as the metadata says.
    """

    path: str
    meta: dict

    def __post_init__(self) -> None:
        # the sessions the latency tables time with, on the CPU with one thread
        from edgenas.latency_tables import CoreML, ExecuTorch, Ncnn, OnnxRuntime, OpenVino

        if self.path.endswith(".pte"):
            method = ExecuTorch(1).method(self.path)
            self.forward = lambda x: ExecuTorch.infer(method, x)
            return
        if self.path.rstrip("/").endswith(".mlpackage"):
            CoreML(1)  # refused in one line where Core ML cannot run (anything but macOS)
            import coremltools as ct

            ml = ct.models.MLModel(self.path.rstrip("/"), compute_units=ct.ComputeUnit.ALL)
            self.forward = lambda x: ml.predict({"input": x})["output"]
            return
        if self.path.endswith(".param"):
            net = Ncnn(1).net(self.path, self.path.removesuffix(".param") + ".bin")
            self.forward = lambda x: Ncnn.infer(net, x)
            return
        if self.path.endswith(".xml"):
            compiled = OpenVino("CPU").compile(self.path)
            request = compiled.create_infer_request()
            self.forward = lambda x: request.infer({0: x})[compiled.outputs[0]]
            return
        session = OnnxRuntime(["CPUExecutionProvider"]).session(self.path)
        name = session.get_inputs()[0].name
        self.forward = lambda x: session.run(None, {name: x})[0]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        if not (Path(path).is_file() or str(path).rstrip("/").endswith(".mlpackage") and Path(path).is_dir()):
            raise FileNotFoundError(f"model {str(path)!r} does not exist")
        return cls(str(path), read_metadata(str(path)))

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> logits (N, classes), one image per run (the export's batch is 1)."""
        i = self.meta["input"]
        x = to_input(images, i["resolution"], i["channels"], i["mean"], i["std"])
        return np.concatenate([np.asarray(self.forward(x[k : k + 1])) for k in range(len(x))])


def read_images(paths: list[Path], channels: int) -> np.ndarray:
    """Image files as uint8 (N, C, H, W) in the model's channel count (all of one size)."""
    out = []
    for p in paths:
        a = np.asarray(open_image(p).convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    sizes = {a.shape for a in out}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)}: predict them one by one")
    return np.stack(out)


def predict_images(model: Model, paths: list[Path], top: int = 3) -> list[dict]:
    """The ``top`` classes and their softmax probabilities per image."""
    rows = []
    for p in paths:
        z = model.logits(read_images([p], model.meta["input"]["channels"]))[0]
        prob = np.exp(z - z.max())
        prob /= prob.sum()
        best = np.argsort(-prob)[:top]
        rows.append({"image": str(p), "top": [(model.classes[k], float(prob[k])) for k in best]})
    return rows


def top1(model: Model, data: ImageData, *, to_model: np.ndarray | None = None, chunk: int = 512) -> float:
    """Top-1 accuracy of ``model`` on every image of ``data``, preprocessed as its metadata says.

    ``to_model`` maps the data's class indices to the model's (default: the same order). An
    image that cannot be read counts as wrong. This is how every exported file is scored:
    finalize's card and ``edgenas predict`` agree by construction.
    """
    n = len(data.labels)
    correct = 0
    for start in range(0, n, chunk):
        index = np.arange(start, min(start + chunk, n))
        pixels, ok = data.pixels(index)
        labels = data.labels[index][ok]
        pred = model.logits(pixels).argmax(1)
        correct += int((pred == (to_model[labels] if to_model is not None else labels)).sum())
    return correct / n


def accuracy_on(model: Model, target: str) -> dict:
    """Top-1 accuracy on a data set: the model's own test split when ``target`` is its training data."""
    from edgenas.data import load_dataset, make_splits

    d = model.meta.get("data", {})
    own = target == d.get("name")
    data = load_dataset(target, root=d.get("root") if own else None, size=d.get("image_size") if own else None)
    if own:
        data = make_splits(
            data,
            val_fraction=d.get("val_fraction", 0.1),
            test_fraction=d.get("test_fraction", 0.1),
            seed=d.get("seed", 0),
        ).test
    missing = [c for c in data.classes if c not in model.classes]
    if missing:
        raise ValueError(
            f"{target!r} has classes the model does not know: {missing[:5]}; model classes: {model.classes[:10]}"
        )
    accuracy = top1(model, data, to_model=np.array([model.classes.index(c) for c in data.classes]))
    split = "test split" if own else "all images"
    return {"target": target, "split": split, "images": len(data.labels), "accuracy": accuracy}


def image_paths(target: Path) -> list[Path] | None:
    """The image files ``target`` names (a file, or a folder holding image files), else None."""
    if target.is_file() and target.suffix.lower() in IMAGE_SUFFIXES:
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files and not any(p.is_dir() for p in target.iterdir()):
            return files
    return None
