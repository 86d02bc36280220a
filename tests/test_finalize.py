"""The finalize stage: every step, the model card, and resuming after a kill between steps."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml


@pytest.mark.slow
def test_finalize_resumes_after_kill(tiny_run, tmp_path):
    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(tmp_path / "run")
    # a user teacher from the config (the default one, the largest subnet, runs in test_pipeline)
    import torch

    from edgenas.search_spaces import SPACES, Arch, build_subnet

    torch.save(build_subnet(SPACES["tiny"], Arch.parse("r24|k5e3-k5e3|k5e3-k5e3")).eval(), tmp_path / "teacher.pt")
    data["finalize"] = {
        "distill_epochs": 1,
        "prune": {"step": 0.1, "max_steps": 1, "tolerance": 0.5},
        "qat": "always",  # QAT whatever the timing says (finalize.qat: auto, below)
        "qat_epochs": 1,
        "lr": 0.05,
        "measure_rounds": 5,
        "teacher": str(tmp_path / "teacher.pt"),
        "teacher_resolution": 24,
        # the untrained teacher leaves near-tie logits, of which int8 rounding flips 1-5 %
        # (the check itself: test_a_failed_export_check_is_not_deployed)
        "accept_failed_checks": True,
    }
    (tmp_path / "run").mkdir()
    import shutil

    shutil.copy(tiny_run.parent / "supernet.pt", tmp_path / "run" / "supernet.pt")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    arch = "r16|k3e3-k5e2se|k3e3se-k5e2"
    cmd = [sys.executable, "-m", "edgenas.cli", "finalize", "--config", str(cfg), "--arch", arch, "--quiet"]
    out = tmp_path / "run" / "finalize" / "cpu"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (out / "distilled.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()
    assert (out / "searched.pt").exists() and not (out / "model_card.json").exists()
    # a step is finished once its record is written beside its model (a kill between the two leaves it unfinished)
    done = [p for p in ("searched.pt", "distilled.pt", "pruned.pt") if (out / p).with_suffix(".json").exists()]
    stamps = {p: (out / p).stat().st_mtime_ns for p in done}
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for p, t in stamps.items():  # finished steps are not redone
        assert (out / p).stat().st_mtime_ns == t
    assert not list(out.glob("*.epochs.pt"))  # a finetune's epoch checkpoint goes once its model is kept
    card = json.loads((out / "model_card.json").read_text())
    stages = [s["stage"] for s in card["stages"]]
    assert stages == ["teacher", "searched", "distilled", "pruned", "qat_int8", "ptq_int8"]
    by = {s["stage"]: s for s in card["stages"]}
    # int8 weights; on a 16k-parameter model the per-channel scales, float biases and QDQ nodes
    # are a large fixed share, so less than the 4x a real model gets
    assert by["qat_int8"]["size_mb"] < 0.6 * by["pruned"]["size_mb"]
    assert all(s["latency_ms"] > 0 and s["peak_memory_mb"] > 0 and 0 <= s["test_accuracy"] <= 1 for s in card["stages"])
    # size and activation memory of every file, and their predictions from the blocks alone
    for s in card["stages"]:
        assert s["predicted_activation_kb"] == pytest.approx(s["activation_kb"], rel=1e-6), s["stage"]
        if s["stage"] != "ptq_int8":  # the predictor describes the QAT int8 export, not ONNX Runtime's PTQ
            assert s["predicted_size_kb"] == pytest.approx(s["size_kb"], rel=0.03), s["stage"]
    assert by["ptq_int8"]["predicted_size_kb"] is None
    # ONNX Runtime's models take any batch (free at batch 1 there); the metadata says so
    import numpy as np
    import onnxruntime as ort

    from edgenas.preprocess import read_metadata

    for name in ("pruned", "qat_int8", "ptq_int8"):
        sess = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape[0] == "batch", name
        assert sess.run(None, {"input": np.zeros((4, 1, 16, 16), np.float32)})[0].shape == (4, 10)
        assert read_metadata(str(out / f"{name}.onnx"))["input"]["batch"] == "dynamic"
    assert by["qat_int8"]["activation_kb"] < 0.3 * by["pruned"]["activation_kb"]
    steps = card["prune_steps"]
    assert all(st["flash_kb"] > 0 and st["ram_kb"] > 0 for st in steps)  # predicted at every step
    assert steps[0]["flash_kb"] >= steps[-1]["flash_kb"]
    assert card["chosen_precision"] in ("fp32", "int8")
    assert card["teacher"] == str(tmp_path / "teacher.pt") and by["teacher"]["size_mb"] > by["searched"]["size_mb"]
    qat = card["qat_epochs"]  # the exported QAT model is its best epoch on val (0: calibrated only)
    vals = [e["val_accuracy"] for e in qat["epochs"]]
    assert len(vals) == 2 and vals[qat["kept_epoch"]] == max(vals)
    assert card["checks"]["fp32_vs_torch"]["ok"]
    assert "| stage | precision | size (MB)" in (out / "model_card.md").read_text()
    # which kernel ran each node: all on ONNX Runtime's CPU provider; the int8 graph keeps float activations
    placed = card["placement"]
    assert {r["executed_by"] for r in placed["pruned"]["rows"]} == {"CPUExecutionProvider"}
    assert placed["pruned"]["summary"]["fallbacks"] == [] and placed["pruned"]["summary"]["float_nodes_in_int8"] == 0
    assert (
        placed["qat_int8"]["summary"]["float_nodes_in_int8"] > 0 and placed["qat_int8"]["summary"]["conversion_us"] > 0
    )
    assert "## Where each node ran" in (out / "model_card.md").read_text()
    for name in ("pruned.onnx", "qat_int8.onnx", "ptq_int8.onnx"):
        assert (out / name).stat().st_size > 0

    # the killed and resumed run made the models an uninterrupted run makes
    whole = tmp_path / "whole"
    whole.mkdir()
    shutil.copy(tiny_run.parent / "supernet.pt", whole / "supernet.pt")
    cfg_whole = tmp_path / "whole.yaml"
    cfg_whole.write_text(yaml.safe_dump({**data, "run_dir": str(whole)}))
    r = subprocess.run([*cmd[:-4], str(cfg_whole), "--arch", arch, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = whole / "finalize" / "cpu"
    for name in ("distilled.onnx", "pruned.onnx", "qat_int8.onnx"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    card_whole = json.loads((ref / "model_card.json").read_text())
    assert [s["test_accuracy"] for s in card_whole["stages"]] == [s["test_accuracy"] for s in card["stages"]]

    # the same folder, another arch: no step of the first arch is reused
    other = "r24|k5e3|k3e2se"
    r = subprocess.run(cmd[:-3] + ["--arch", other, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "searched.pt was made by other inputs" in r.stderr
    assert json.loads((out / "model_card.json").read_text())["arch"] == other
    import onnx

    for name in ("searched.onnx", "pruned.onnx", "qat_int8.onnx"):
        shape = onnx.load(str(out / name)).graph.input[0].type.tensor_type.shape
        dims = [d.dim_value or d.dim_param for d in shape.dim]
        assert dims == ["batch", 1, 24, 24], name


@pytest.mark.slow
def test_a_failed_export_check_is_not_deployed(tiny_run, tmp_path, monkeypatch):
    """An int8 export that disagrees with its fake-quant model: fp32 deployed, the card says why, finalize fails."""
    import shutil

    from edgenas import finalize as fin
    from edgenas import pipeline
    from edgenas.config import load_config
    from edgenas.errors import ExportCheckError

    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["finalize"] = {"distill_epochs": 0, "prune": {"max_steps": 0}, "qat": "always", "qat_epochs": 0}
    data["finalize"]["measure_rounds"] = 3
    (tmp_path / "run").mkdir()
    shutil.copy(tiny_run.parent / "supernet.pt", tmp_path / "run" / "supernet.pt")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    real = fin._agreement
    monkeypatch.setattr(
        fin,
        "_agreement",
        lambda model, torch_model, x: (
            (0.5, 3.0) if type(torch_model).__name__ == "QuantNet" else real(model, torch_model, x)
        ),
    )
    arch = {"cpu": "r16|k3e2|k3e2"}
    with pytest.raises(ExportCheckError, match="the int8 export failed its check"):
        pipeline.finalize(load_config(tmp_path / "c.yaml"), archs=arch, progress=False)
    card = json.loads((tmp_path / "run" / "finalize" / "cpu" / "model_card.json").read_text())
    assert card["failed_checks"] == ["int8"] and card["chosen_precision"] == "fp32"
    assert card["chosen_model"] == "pruned.onnx" and "int8 export failed its check: not deployed" in card["why"]
    assert "failed its check" in (tmp_path / "run" / "finalize" / "cpu" / "model_card.md").read_text()

    data["finalize"]["accept_failed_checks"] = True
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    cards = pipeline.finalize(load_config(tmp_path / "c.yaml"), archs=arch, progress=False)
    assert cards["cpu"]["failed_checks"] == ["int8"] and "accepted" in cards["cpu"]["why"]


def test_the_card_predicts_each_export_of_the_tables_precision_from_its_own_blocks(tiny_table):
    """fp32 table: searched and distilled (the arch) and pruned (its blocks); int8 table: the int8 exports of the
    pruned model, whose blocks the table lacks and estimates."""
    import dataclasses

    from edgenas.finalize import _prediction
    from edgenas.latency_tables import LatencyTable, Predictor
    from edgenas.pruning import PruneConfig
    from edgenas.search_spaces import SPACES, Arch, build_subnet, current_specs
    from tests._pruning import prune_untrained

    arch = Arch.parse("r16|k3e3|k3e3")
    net = build_subnet(SPACES["tiny"], arch).eval()
    pruned, _ = prune_untrained(net, 16, PruneConfig(step=0.3, max_steps=1, tolerance=1.0))
    table = LatencyTable.load(tiny_table)
    int8 = dataclasses.replace(table, header={**table.header, "precision": "int8"})
    arch_ms = Predictor(table).predict(arch)

    card = _prediction(Predictor(table), arch, net, net)
    assert card["predicted_precision"] == "fp32" and not card["predicted_pruned_estimated"]
    assert card["predicted_extrapolated"] is None  # the table's validation covered the tiny space
    narrow = dataclasses.replace(table, calibration={**table.calibration, "params_range": [0.0, 1e-4]})
    assert "extrapolated" in _prediction(Predictor(narrow), arch, net, net)["predicted_extrapolated"]
    assert card["predicted_stage_ms"] == pytest.approx({"searched": arch_ms, "distilled": arch_ms, "pruned": arch_ms})
    card = _prediction(Predictor(int8), arch, net, net)
    assert card["predicted_stage_ms"] == pytest.approx({"qat_int8": arch_ms, "ptq_int8": arch_ms})

    card = _prediction(Predictor(table), arch, net, pruned)
    stages = card["predicted_stage_ms"]
    assert card["predicted_pruned_estimated"] and stages["searched"] == pytest.approx(arch_ms)
    assert stages["pruned"] == pytest.approx(Predictor(table).predict_specs(current_specs(pruned)))
    assert stages["pruned"] != pytest.approx(arch_ms, rel=1e-6)
    assert _prediction(Predictor(int8), arch, net, pruned)["predicted_stage_ms"]["qat_int8"] == stages["pruned"]


ARCH = "r16|k3e2|k3e3se"  # the arch the direct finalize_arch tests finalize


def _tiny_parts(tiny_run):
    """The tiny run's splits, space and supernet: what a direct finalize_arch call needs beside its config."""
    from edgenas import pipeline
    from edgenas.config import load_config
    from edgenas.nas import load_supernet

    config = load_config(tiny_run)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    return splits, space, load_supernet(space, config.layout.supernet)


def _finalize(parts, backend, out_dir, config, **kwargs):
    """finalize_arch on ARCH of the tiny supernet, quietly."""
    from edgenas.finalize import finalize_arch

    splits, space, supernet = parts
    return finalize_arch(
        space.parse(ARCH),
        space=space,
        supernet=supernet,
        splits=splits,
        backend=backend,
        out_dir=out_dir,
        config=config,
        progress=False,
        **kwargs,
    )


TEACHERS = ("r16|k5e3-k5e3|k5e3se-k5e3", "r16|k5e3se|k5e3-k5e3se")


def _subnet_file(supernet, splits, arch: str, path):
    """A subnet of the tiny supernet exported as finalize exports it: an ONNX teacher file with its metadata."""
    from edgenas.export import export_onnx, with_metadata
    from edgenas.nas import SubnetEvaluator
    from edgenas.preprocess import preprocessing_metadata

    a = supernet.space.parse(arch)
    net = SubnetEvaluator(supernet, splits, calib_batches=2).subnet(a).cpu().eval()
    meta = preprocessing_metadata(
        resolution=a.resolution,
        channels=1,
        mean=float(splits.mean),
        std=float(splits.std),
        classes=list(splits.train.classes),
        arch=arch,
        space="tiny",
        data={},
    )
    path.write_bytes(with_metadata(export_onnx(net, (1, 1, a.resolution, a.resolution)), meta))
    return path


def test_an_openvino_device_deploys_an_ir_scored_as_openvino_runs_it(tiny_run, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edgenas[openvino]')")
    from edgenas.finalize import FinalizeConfig
    from edgenas.latency_tables import make_backend
    from edgenas.predict import Model
    from edgenas.preprocess import read_metadata
    from edgenas.pruning import PruneConfig

    splits, space, supernet = parts = _tiny_parts(tiny_run)
    teachers = [_subnet_file(supernet, splits, arch, tmp_path / f"t{i}.onnx") for i, arch in enumerate(TEACHERS)]
    card = _finalize(
        parts,
        make_backend("openvino:CPU"),
        tmp_path / "ov",
        FinalizeConfig(
            distill_epochs=1,
            qat="always",
            qat_epochs=1,
            measure_rounds=3,
            prune=PruneConfig(max_steps=0),
            accept_failed_checks=True,
            teacher=tuple(str(t) for t in teachers),  # an ensemble of ONNX files (the teacher row: OpenVINO's batch 1)
        ),
    )
    by = {s["stage"]: s for s in card["stages"]}
    assert card["teacher"] == ", ".join(str(t) for t in teachers)
    pixels, _ = splits.test.pixels(np.arange(len(splits.test.labels)))
    mean_logits = sum(Model.load(t).logits(pixels) for t in teachers) / len(teachers)
    assert by["teacher"]["test_accuracy"] == pytest.approx((mean_logits.argmax(1) == splits.test.labels).mean())
    assert read_metadata(str(tmp_path / "ov" / "teacher.onnx"))["input"]["batch"] == 1
    dep = card["deployed"]
    assert dep["runtime"].startswith("openvino ") and dep["device"] == ["CPU"]
    assert dep["file"] == ("qat_int8.xml" if card["chosen_precision"] == "int8" else "pruned.xml")
    xml = tmp_path / "ov" / dep["file"]
    assert xml.exists() and xml.with_suffix(".bin").exists() and read_metadata(str(xml))["arch"] == card["arch"]
    # OpenVINO runs a symbolic batch 1.2-1.5x slower at batch 1: its models keep batch 1
    assert read_metadata(str(xml))["input"]["batch"] == 1
    onnx_acc = by[dep["file"].removesuffix(".xml")]["test_accuracy"]
    assert abs(dep["test_accuracy"] - onnx_acc) <= 0.02
    assert "deployed file: `" in (tmp_path / "ov" / "model_card.md").read_text()
    ov_rows = card["placement"]["qat_int8"]["rows"]  # OpenVINO's primitives, e.g. jit_avx2_I8
    assert ov_rows and all(r["us"] >= 0 and r["executed_by"] for r in ov_rows)
    assert any(r["precision"] == "int8" for r in ov_rows)


def test_finalize_keeps_the_best_distillation_epoch_and_the_better_teacher(tiny_run, tmp_path):
    """The distillation's best epoch on validation is the model kept (epoch 0: the searched model itself);
    the largest subnet trained further teaches only where it measures better; each step's validation is carded."""
    from edgenas.config import FinalizeConfig, PruneConfig
    from edgenas.latency_tables import LocalBackend

    fin = FinalizeConfig(
        distill_epochs=2,
        lr=0.05,
        warmup_epochs=0.5,
        teacher_epochs=1,
        prune=PruneConfig(max_steps=0),
        qat="always",
        qat_epochs=0,
        measure_rounds=3,
        accept_failed_checks=True,
    )
    parts = _tiny_parts(tiny_run)
    splits = parts[0]
    card = _finalize(parts, LocalBackend(threads=1), tmp_path / "fin", fin)
    curve = card["distill_epochs"]
    vals = [e["val_accuracy"] for e in curve["epochs"]]
    assert len(vals) == 3 and vals[curve["kept_epoch"]] == max(vals)
    val = card["validation"]
    assert val["distilled"] == pytest.approx(max(vals)) and val["distilled"] >= val["searched"]
    assert val["searched"] == pytest.approx(vals[0]) and set(val) == {
        "teacher",
        "searched",
        "distilled",
        "pruned",
        "qat",
    }
    choice = card["teacher_selection"]
    scores = choice["val_accuracy"]
    assert len(scores) == 2 and choice["chosen"] == max(scores, key=scores.get)
    assert card["teacher"] == choice["chosen"] and val["teacher"] == pytest.approx(max(scores.values()))
    assert list(card["steps"])[0] == "teacher" and (tmp_path / "fin" / "teacher.pt").exists()
    assert card["data_sizes"]["test"] == len(splits.test.labels)
    md = (tmp_path / "fin" / "model_card.md").read_text()
    assert "- distillation: val accuracy (%)" in md and "validation accuracy after each step" in md
    assert "computed once" in md  # the default: the teacher's logits of the clean images
    assert json.loads((tmp_path / "fin" / "distilled.json").read_text())["inputs"]["teacher_logits"] == "clean"
    # the teacher on every augmented batch instead: the distillation (and what follows it) is made again
    online = dataclasses.replace(fin, teacher_logits="online")
    again = _finalize(parts, LocalBackend(threads=1), tmp_path / "fin", online)
    assert again["steps_made"][:2] == ["distilled", "pruned"] and "teacher" not in again["steps_made"]
    assert "teacher_logits" not in json.loads((tmp_path / "fin" / "distilled.json").read_text())["inputs"]
    assert "computed once" not in (tmp_path / "fin" / "model_card.md").read_text()
    # another device of the run (a sibling folder) whose search chose the same arch: its steps are copied, not made
    other = _finalize(parts, LocalBackend(threads=1), tmp_path / "other", online)
    assert not {"teacher", "distilled", "pruned"} & set(other["steps_made"])
    records = [json.loads((tmp_path / d / "distilled.json").read_text()) for d in ("fin", "other")]
    assert records[0] == records[1] and other["step_seconds"]["distilled"] == again["step_seconds"]["distilled"]


def test_qat_runs_where_the_device_times_int8_faster_and_its_files_go_where_it_does_not(tiny_run, tmp_path):
    """finalize.qat: "auto" times the pruned model's fp32 and PTQ int8 on the device and runs QAT only at
    QAT_MIN_SPEEDUP; the choice is kept for a resumed run; where QAT does not run, an earlier QAT's files
    are removed and the card says why fp32 is deployed."""
    from edgenas.config import FinalizeConfig, PruneConfig
    from edgenas.finalize import QAT_MIN_SPEEDUP
    from edgenas.latency_tables import LocalBackend

    parts, out = _tiny_parts(tiny_run), tmp_path / "fin"
    always = FinalizeConfig(
        distill_epochs=0,
        prune=PruneConfig(max_steps=0),
        qat="always",
        qat_epochs=0,
        measure_rounds=3,
        accept_failed_checks=True,  # near-tie logits of a barely trained model: see test_pipeline
    )
    card = _finalize(parts, LocalBackend(threads=1), out, always)
    assert card["qat_choice"] == {"setting": "always", "run": True, "why": "finalize.qat: always"}
    assert (out / "qat_int8.onnx").exists() and (out / "qat.pt").exists()

    auto = dataclasses.replace(always, qat="auto")
    card = _finalize(parts, LocalBackend(threads=1), out, auto)
    choice = card["qat_choice"]
    speedup = choice["fp32_ms"] / choice["int8_ms"]
    assert choice["run"] == (speedup >= QAT_MIN_SPEEDUP) and f"{speedup:.2f}x the fp32 speed" in choice["why"]
    stages = {s["stage"] for s in card["stages"]}
    if choice["run"]:  # the QAT model of the first call is the same step: reused
        assert "qat" not in card["steps_made"] and "qat_int8" in stages
    else:
        assert not any((out / f).exists() for f in ("qat.pt", "qat.json", "qat_epochs.json", "qat_int8.onnx"))
        assert "qat_int8" not in stages and "ptq_int8" in stages and card["qat_epochs"] == []
        assert card["chosen_precision"] == "fp32" and "QAT skipped" in card["why"]
        assert card["checks"]["int8_vs_fake_quant"]["top1_agreement"] is None
    stored = json.loads((out / "qat_choice.json").read_text())
    again = _finalize(parts, LocalBackend(threads=1), out, auto)  # resumed: not timed again
    assert again["qat_choice"] == choice and json.loads((out / "qat_choice.json").read_text()) == stored

    never = _finalize(parts, LocalBackend(threads=1), out, dataclasses.replace(always, qat="never"))
    assert never["qat_choice"]["why"] == "finalize.qat: never" and not (out / "qat_int8.onnx").exists()
    assert never["chosen_precision"] == "fp32" and never["why"].endswith("finalize.qat: never")


@pytest.mark.parametrize(("device", "suffix"), [("executorch", ".pte"), ("ncnn", ".param")])
def test_a_phone_runtime_device_deploys_its_own_format_scored_as_it_runs(tiny_run, tmp_path, device, suffix):
    pytest.importorskip(device, reason=f"pip install 'edgenas[{device}]'")
    from edgenas.finalize import FinalizeConfig
    from edgenas.latency_tables import make_backend
    from edgenas.predict import Model, top1
    from edgenas.pruning import PruneConfig

    parts = _tiny_parts(tiny_run)
    splits = parts[0]
    out = tmp_path / device
    card = _finalize(
        parts,
        make_backend(device),
        out,
        FinalizeConfig(
            distill_epochs=1,
            qat="always",  # ncnn gets no int8 model (no QAT) even so
            qat_epochs=1,
            measure_rounds=3,
            prune=PruneConfig(max_steps=0),
            accept_failed_checks=True,
        ),
    )
    dep, by = card["deployed"], {s["stage"]: s for s in card["stages"]}
    assert dep["runtime"].startswith(f"{device} ") and dep["file"].endswith(suffix)
    # every stage the device runs is timed in its format; ncnn gets no int8 model, ExecuTorch its XNNPACK int8
    int8 = {"qat_int8", "ptq_int8"} if device == "executorch" else set()
    assert set(by) == {"teacher", "searched", "distilled", "pruned"} | int8
    assert all(by[s]["file"].endswith(suffix) and (out / by[s]["file"]).exists() for s in by)
    model = Model.load(out / dep["file"])  # what edgenas predict runs: the file and its metadata beside it
    assert model.meta["arch"] == card["arch"] and top1(model, splits.test) == dep["test_accuracy"]
    assert abs(dep["test_accuracy"] - by["pruned"]["test_accuracy"]) <= (0.05 if int8 else 0.005)
    checks = card["checks"]  # on the files the device runs
    assert checks["fp32_vs_torch"]["file"] == f"pruned{suffix}" and checks["fp32_vs_torch"]["ok"]
    if device == "executorch":
        # the int8 program is checked against the fake-quant model it came from (their agreement on a trained
        # model: tests/quant/test_xnnpack.py; this 2-epoch supernet's logits are too close to call)
        assert checks["int8_vs_fake_quant"]["file"] == "qat_int8.pte"
        assert 0 <= checks["int8_vs_fake_quant"]["top1_agreement"] <= 1
        assert abs(by["qat_int8"]["test_accuracy"] - by["pruned"]["test_accuracy"]) <= 0.05
        assert "XnnpackBackend" in card["placement"]["qat_int8"]["summary"]["by_executor"]
    else:
        assert card["chosen_precision"] == "fp32" and "no int8 model" in card["why"]
        assert not card["qat_choice"]["run"] and not (out / "qat_int8.onnx").exists()
    assert "## Where each node ran" in (out / "model_card.md").read_text()


def test_an_onnx_teacher_is_refused_for_a_device_that_runs_another_format(tiny_run, tmp_path):
    pytest.importorskip("ncnn", reason="pip install 'edgenas[ncnn]'")
    from edgenas.finalize import FinalizeConfig
    from edgenas.latency_tables import make_backend

    parts = _tiny_parts(tiny_run)
    teacher = tmp_path / "t.onnx"
    teacher.write_bytes(b"refused before it is read")
    with pytest.raises(ValueError, match=r"is ONNX; device 'phone' runs ncnn files"):
        _finalize(parts, make_backend("ncnn"), tmp_path / "fin", FinalizeConfig(teacher=str(teacher)), device="phone")
    assert not (tmp_path / "fin" / "searched.pt").exists()  # refused before any work


def test_the_teachers_clean_logits_are_computed_once_for_the_distillation_and_every_pruning_finetune(
    tiny_run, tmp_path, monkeypatch
):
    """With clean logits the teacher runs once per finalize: the distillation and each pruning finetune learn
    from the same tensor; QAT, taught by the pruned model, computes that model's own. Every record names it."""
    import edgenas.distill
    import edgenas.finalize
    from edgenas.config import FinalizeConfig, PruneConfig
    from edgenas.latency_tables import LocalBackend

    calls = []

    def counted(teacher, *args, **kwargs):
        calls.append(id(teacher))
        return clean(teacher, *args, **kwargs)

    clean = edgenas.distill.clean_teacher_logits
    monkeypatch.setattr(edgenas.finalize, "clean_teacher_logits", counted)
    monkeypatch.setattr(edgenas.distill, "clean_teacher_logits", counted)
    rates = []  # each finetune's peak learning rate

    def rated(model, splits, config, **kwargs):
        rates.append((kwargs.get("desc"), config.lr))
        return fit(model, splits, config, **kwargs)

    fit = edgenas.finalize.fit
    monkeypatch.setattr(edgenas.finalize, "fit", rated)
    fin = FinalizeConfig(
        distill_epochs=1,
        lr=0.05,
        prune=PruneConfig(step=0.1, max_steps=2, tolerance=1.0),  # tolerance 1: both steps are taken
        prune_finetune_epochs=1,
        prune_lr=0.002,
        qat="always",
        qat_epochs=1,
        measure_rounds=3,
        accept_failed_checks=True,
    )
    card = _finalize(_tiny_parts(tiny_run), LocalBackend(threads=1), tmp_path / "fin", fin)
    assert [s["step"] for s in card["prune_steps"]] == [0, 1, 2]  # two finetunes by the teacher after distilling
    assert len(calls) == 2 and calls[0] != calls[1]  # the teacher once, then QAT's teacher (the pruned model)
    # the pruning finetunes repair a trained model at their own, lower rate (recorded: a new rate prunes again)
    assert [lr for desc, lr in rates if desc == "prune-finetune"] == [0.002, 0.002]
    assert ("distill", 0.05) in rates
    assert json.loads((tmp_path / "fin" / "pruned.json").read_text())["inputs"]["prune_lr"] == 0.002
    for step in ("distilled", "pruned", "qat"):
        assert json.loads((tmp_path / "fin" / f"{step}.json").read_text())["inputs"]["teacher_logits"] == "clean"
    calls.clear()  # no finetune learns from a teacher: no teacher runs
    idle = dataclasses.replace(fin, distill_epochs=0, prune_finetune_epochs=0, qat_epochs=0)
    _finalize(_tiny_parts(tiny_run), LocalBackend(threads=1), tmp_path / "idle", idle)
    assert calls == []
