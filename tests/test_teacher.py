"""Teachers for distillation: a torch file, an ONNX file, an ensemble of ONNX files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgenas.export import export_onnx, with_metadata
from edgenas.predict import Model
from edgenas.preprocess import preprocessing_metadata
from edgenas.search_spaces import SPACES, Arch, build_subnet
from edgenas.teacher import OnnxTeacher, load_teacher, teacher_input_size

CLASSES = [str(d) for d in range(10)]
DATA_NORM = {"mean": 0.3, "std": 0.2}


def _exported(path, arch: str, seed: int, *, mean: float, std: float, classes=CLASSES, batch_axis=True):
    """A tiny net exported as finalize exports (with edgenas metadata: its own normalisation and classes)."""
    torch.manual_seed(seed)
    net = build_subnet(SPACES["tiny"], Arch.parse(arch)).eval()
    meta = preprocessing_metadata(
        resolution=16, channels=1, mean=mean, std=std, classes=classes, arch=arch, space="tiny", data={}
    )
    path.write_bytes(with_metadata(export_onnx(net, (1, 1, 16, 16), dynamic_batch=batch_axis), meta))
    return path


def _own_logits(path, images: np.ndarray) -> np.ndarray:
    """What a file computes for uint8 images, as edgenas predict feeds it (its own preprocessing)."""
    return Model.load(path).logits(images)


def _data_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((images.astype(np.float32) / 255 - DATA_NORM["mean"]) / DATA_NORM["std"])


def test_a_user_teacher_is_loaded_and_checked(tmp_path):
    import torch

    from edgenas.search_spaces import SPACES, Arch, build_subnet
    from edgenas.teacher import load_teacher

    net = build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3|k3e3")).eval()
    x = torch.randn(2, 1, 16, 16)
    scripted = tmp_path / "teacher_ts.pt"
    torch.jit.trace(net, x[:1]).save(str(scripted))
    pickled = tmp_path / "teacher.pt"
    torch.save(net, pickled)
    for path in (scripted, pickled):  # both formats load and compute what the module computes
        teacher = load_teacher(path, (1, 1, 16, 16), 10)
        with torch.no_grad():
            assert torch.allclose(teacher(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"returns shape \(1, 10\); expected \(1, 7\)"):
        load_teacher(pickled, (1, 1, 16, 16), 7)
    with pytest.raises(ValueError, match="does not run on input of shape"):
        load_teacher(pickled, (1, 3, 16, 16), 10)
    torch.save({"weights": net.state_dict()}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="holds a dict, not a torch model"):
        load_teacher(tmp_path / "state.pt", (1, 1, 16, 16), 10)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher(tmp_path / "missing.pt", (1, 1, 16, 16), 10)
    # a damaged file: the real error of the format it is, not the other format's
    import zipfile

    broken = tmp_path / "broken_ts.pt"
    with zipfile.ZipFile(scripted) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"def forward(self, x):\n  return oops(" if item.filename.endswith(".py") else data)
    with pytest.raises(ValueError, match="cannot load it as a TorchScript file"):
        load_teacher(broken, (1, 1, 16, 16), 10)
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(ValueError, match="neither a TorchScript nor a torch.save archive"):
        load_teacher(tmp_path / "notes.pt", (1, 1, 16, 16), 10)


def test_an_ensemble_of_onnx_files_teaches_the_mean_of_their_logits_from_the_datas_input(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 1, 16, 16), dtype=np.uint8)
    a = _exported(tmp_path / "a.onnx", "r16|k3e3|k3e3", 0, mean=0.5, std=0.25)
    b = _exported(tmp_path / "b.onnx", "r16|k5e3se|k3e2", 1, mean=0.1, std=0.4, batch_axis=False)
    teacher = load_teacher([a, b], (1, 1, 16, 16), 10, classes=CLASSES, **DATA_NORM)
    assert isinstance(teacher, OnnxTeacher) and teacher_input_size([a, b]) == 16
    expected = (_own_logits(a, images) + _own_logits(b, images)) / 2
    with torch.no_grad():
        got = teacher(_data_input(images)).numpy()
    assert got.shape == (5, 10) and np.allclose(got, expected, atol=1e-4)
    # alone, each file computes its own logits from the data's normalisation (the affine map in front)
    with torch.no_grad():
        alone = load_teacher(b, (1, 1, 16, 16), 10, classes=CLASSES, **DATA_NORM)(_data_input(images)).numpy()
    assert np.allclose(alone, _own_logits(b, images), atol=1e-4)
    # the graph that teaches is the file finalize times: one input, one output, batch 1 where asked
    g = onnx.load_from_string(teacher.export(dynamic_batch=False)).graph
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [1, 1, 16, 16]
    assert [n.op_type for n in g.node].count("Mean") == 1


def test_a_teacher_whose_graph_fixes_the_batch_runs_image_by_image(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 1, 16, 16), dtype=np.uint8)
    path = _exported(tmp_path / "fixed.onnx", "r16|k3e3|k3e3", 0, mean=0.3, std=0.2)
    model = onnx.load(str(path))  # a Reshape to a batch of one inside the graph, as some exporters write
    out = model.graph.output[0].name
    model.graph.node[-1].output[0] = "logits_raw"
    shape = onnx.numpy_helper.from_array(np.array([1, 10], dtype=np.int64), "fixed_shape")
    model.graph.initializer.append(shape)
    model.graph.node.append(onnx.helper.make_node("Reshape", ["logits_raw", "fixed_shape"], [out]))
    path.write_bytes(model.SerializeToString())
    teacher = load_teacher(path, (1, 1, 16, 16), 10, classes=CLASSES, **DATA_NORM)
    with torch.no_grad():
        got = teacher(_data_input(images)).numpy()
    assert np.allclose(got, _own_logits(path, images), atol=1e-4)


def test_onnx_teachers_are_told_apart_by_their_graphs(tmp_path):
    from edgenas.finalize import weights_digest

    a = _exported(tmp_path / "a.onnx", "r16|k3e3|k3e3", 0, mean=0.3, std=0.2)
    b = _exported(tmp_path / "b.onnx", "r16|k3e3|k3e3", 1, mean=0.3, std=0.2)
    digests = {weights_digest(load_teacher(p, (1, 1, 16, 16), 10, **DATA_NORM)) for p in ([a], [b], [a, b], a)}
    assert len(digests) == 3  # [a] and a are the same teacher


def test_a_bad_onnx_teacher_is_refused_in_one_line(tmp_path):
    a = _exported(tmp_path / "a.onnx", "r16|k3e3|k3e3", 0, mean=0.3, std=0.2)
    letters = _exported(tmp_path / "l.onnx", "r16|k3e3|k3e3", 0, mean=0.3, std=0.2, classes=list("abcdefghij"))
    torch.save(build_subnet(SPACES["tiny"], Arch.parse("r16|k3e3|k3e3")).eval(), tmp_path / "t.pt")
    (tmp_path / "junk.onnx").write_text("not a graph")
    cases = [
        ([a, letters], "predicts the classes"),
        ([a, tmp_path / "t.pt"], "an ensemble is of ONNX files only"),
        ([], "an empty list"),
        (tmp_path / "junk.onnx", "not an ONNX file"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            load_teacher(path, (1, 1, 16, 16), 10, classes=CLASSES, **DATA_NORM)
    with pytest.raises(ValueError, match=r"takes input \[.*16, 16\]; the data gives \[1, 1, 24, 24\]"):
        load_teacher(a, (1, 1, 24, 24), 10, classes=CLASSES, **DATA_NORM)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_teacher([a, tmp_path / "missing.onnx"], (1, 1, 16, 16), 10)
