"""The YAML config: unknown keys, wrong types and impossible values fail with the key named."""

from __future__ import annotations

import pytest
import yaml

from edgenas.config import load_config, parse_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"space": "tiny", "search": {"n_trials": 5}}))
    c = load_config(path, {"search": {"n_trials": 7, "storage": None}})
    assert c.space == "tiny" and c.search.n_trials == 7 and c.search.sampler == "guided"
    assert c.train.temperature == 4.0 and c.train.alpha == 0.7
    assert c.train.device == "auto" and c.data.augmentations == ("crop", "flip")  # auto, for fashion-mnist


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"spaces": "tiny"}, "unknown key ['spaces'] in config"),
        ({"train": {"epoch": 3}}, "unknown key ['epoch'] in train"),
        ({"train": {"epochs": "three"}}, "train.epochs: expected an integer, got 'three'"),
        ({"train": {"epochs": 0}}, "epochs >= 1"),
        ({"train": {"init_from": 5}}, "train.init_from: expected a string, got 5"),
        ({"train": {"init_from": " "}}, "train.init_from must be a checkpoint path or null, got ' '"),
        (
            {"search": {"sampler": "grid"}},
            "search.sampler must be one of ('nsga2', 'tpe', 'random', 'guided'), got 'grid'",
        ),
        ({"search": {"val_images": 0}}, "search.val_images must be >= 1 or null (all), got 0"),
        ({"search": {"calib_batches": 0}}, "search.calib_batches must be >= 1, got 0"),
        ({"search": {"tie_pts": -0.1}}, "search.tie_pts must be in [0, 100) accuracy points, got -0.1"),
        ({"devices": [{"lut": "x"}]}, "devices[0]"),
        ({"devices": [{"name": "a", "precision": "fp16"}]}, "precision must be"),
        ({"devices": [{"name": "a", "lut": "x", "budget_ms": -1}]}, "budget_ms must be > 0"),
        ({"devices": [{"name": "a", "ram_kb": 0}]}, "devices[a].ram_kb must be > 0, got 0"),
        ({"devices": [{"name": "a", "flash_kb": -5}]}, "devices[a].flash_kb must be > 0, got -5"),
        (
            {"devices": [{"name": "a", "objectives": ["sram"]}]},
            "devices[a].objectives must be distinct choices of ('latency', 'ram', 'flash'), got ['sram']",
        ),
        ({"devices": [{"name": "a", "objectives": "ram"}]}, "devices[0].objectives: expected a list, got 'ram'"),
        ({"devices": [{"name": "a", "lut": "x"}, {"name": "a", "lut": "y"}]}, "names must be unique"),
        ({"data": {"train_limit": 1.5}}, "data.train_limit: expected an integer"),
        ({"data": {"augment": ["rotate"]}}, "data.augment: unknown augmentation 'rotate'"),
        ({"data": {"augment": "sometimes"}}, "data.augment: unknown augmentation 'sometimes'"),
        ({"data": {"workers": -1}}, "data.workers must be >= 0"),
        ({"train": {"device": "gpu"}}, "train.device must be one of auto, cpu, cuda, cuda:N, mps; got 'gpu'"),
        ({"search": {"device": "cuda:a"}}, "search.device must be one of"),
        ({"finalize": {"device": "tpu"}}, "finalize.device must be one of"),
        (
            {"finalize": {"teacher_logits": "cached"}},
            "finalize.teacher_logits must be one of ('online', 'clean'); got 'cached'",
        ),
        (
            {"finalize": {"prune": {"divisor": "wide"}}},
            "prune.divisor must be an integer >= 1 or 'auto', got 'wide'",
        ),
        (
            {"finalize": {"qat": "sometimes"}},
            "finalize.qat must be one of ('auto', 'always', 'never'); got 'sometimes'",
        ),
        ({"train": {"label_smoothing": 1.0}}, "label_smoothing in [0, 1)"),
        (
            {"devices": [{"name": "a", "budget_ms": 1.0, "budget_of": "mbv3-small-1"}]},
            "devices[a]: give budget_ms or budget_of, not both",
        ),
        ({"devices": [{"name": "a", "budget_of": "mbv3-small-1", "budget_scale": 0}]}, "budget_scale must be > 0"),
        ({"finalize": {"teacher_epochs": -1}}, "finalize.teacher_epochs must be >= 0, got -1"),
        ({"finalize": {"teacher": 3}}, "finalize.teacher: expected str or tuple or NoneType, got 3"),
        (
            {"finalize": {"teacher": ["a.onnx", 3]}},
            "finalize.teacher: expected str or tuple or NoneType, got ['a.onnx', 3]",
        ),
        ({"finalize": {"warmup_epochs": -0.5}}, "finalize.warmup_epochs must be >= 0"),
        ({"finalize": {"prune_lr": 0}}, "finalize.lr, prune_lr, qat_lr and teacher_lr must be > 0"),
        ({"train": {"momentum": 1.0}}, "train needs momentum in [0, 1)"),
    ],
)
def test_bad_configs(data, fragment):
    with pytest.raises(ValueError) as err:
        parse_config(data)
    assert fragment in str(err.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
