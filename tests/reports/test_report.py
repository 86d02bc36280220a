"""The report: the data behind each figure, and the HTML as a browser shows it."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.reports import (
    RunFiles,
    pareto_data,
    placement_data,
    predicted_vs_measured_data,
    provenance_data,
    pruning_data,
    quantization_data,
    search_convergence_data,
    stage_table_data,
    summary_data,
    training_budget_text,
    training_curve_data,
    write_comparison,
    write_report,
)
from tests._system import require_system


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory):
    """The tiny run taken through search and finalize."""
    run = tmp_path_factory.mktemp("report_run")
    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(run)
    # a second device with its own, tighter budget: the report draws the devices' fronts side by side
    data["devices"] = data["devices"] + [
        dict(data["devices"][0], name="cpu-b", budget_ms=0.8 * data["devices"][0]["budget_ms"])
    ]
    data["finalize"] = {
        "distill_epochs": 1,
        "prune": {"step": 0.1, "max_steps": 1, "tolerance": 0.5},
        "qat": "always",  # the report's int8 rows
        "qat_epochs": 1,
        "lr": 0.05,
        "measure_rounds": 5,
        "accept_failed_checks": True,
    }  # near-tie logits of a barely trained model: see test_pipeline
    shutil.copy(tiny_run.parent / "supernet.pt", run / "supernet.pt")
    shutil.copy(tiny_run.parent / "supernet_training.json", run / "supernet_training.json")
    cfg = run / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    config = load_config(cfg)
    pipeline.search(config, progress=False)
    pipeline.finalize(config, progress=False)
    return run


def test_figure_data(finished_run):
    run = RunFiles(finished_run)
    p = pareto_data(run, "cpu")
    kinds = set(p["kind"])
    assert {"pareto front", "MobileNetV3 reference", "finalized"} <= kinds
    assert (p["accuracy"].between(0, 1)).all() and (p["latency_ms"] > 0).all()
    assert p[p["kind"] == "finalized"]["latency_source"].iloc[0] == "measured"
    pvm = predicted_vs_measured_data(run, "cpu")
    assert {"finalized searched (fp32 table)", "finalized distilled (fp32 table)"} <= set(pvm["set"])
    st = stage_table_data(run, "cpu")
    assert list(st["stage"]) == ["teacher", "searched", "distilled", "pruned", "qat_int8", "ptq_int8"]
    curve = training_curve_data(run)
    assert list(curve["epoch"]) == [1, 2] and curve["val_largest"].between(0, 1).all()
    assert training_budget_text(run).startswith("Supernet trained for 2 epochs on 1,")  # the budget, stated


def test_search_convergence_never_falls(finished_run):
    import numpy as np

    data = search_convergence_data(RunFiles(finished_run))
    hv = data[data["series"] == "hypervolume (cpu)"]["value"].to_numpy()
    assert len(hv) == len(RunFiles(finished_run).trials()) and hv[-1] > 0
    assert (np.diff(hv) >= 0).all() and (hv <= 1).all()


def test_summary_says_what_each_device_got(finished_run):
    run = RunFiles(finished_run)
    for device in ("cpu", "cpu-b"):
        card, s = run.card(device), summary_data(run, device)
        stage = {"int8": "qat_int8", "fp32": "pruned"}[card["chosen_precision"]]
        by = {r["stage"]: r for r in card["stages"]}
        assert s["file"] == f"{stage}.onnx" and s["latency_ms"] == by[stage]["latency_ms"]
        assert s["speedup_vs_teacher"] == pytest.approx(by["teacher"]["latency_ms"] / by[stage]["latency_ms"])
        assert s["accuracy_change_pts"] == pytest.approx((s["test_accuracy"] - by["teacher"]["test_accuracy"]) * 100)
        # the nearest MobileNetV3 layout by predicted latency, both scored like the search's trials
        refs = run.references()
        key = f"latency_ms:{device}"
        nearest = min(refs, key=lambda r: abs(r[key] - s["searched_predicted_ms"]))
        assert s["reference"] == nearest["name"] and s["reference_val_accuracy"] == nearest["accuracy"]
        assert s["sentence"].startswith(f"{s['file']} ({s['precision']}, onnxruntime 1.")
        assert " runs in " in s["sentence"]
        assert f"{s['speedup_vs_teacher']:.1f}x speed-up" in s["sentence"] and nearest["name"] in s["sentence"]


def test_compression_and_provenance_data(finished_run):
    run = RunFiles(finished_run)
    pr = pruning_data(run, "cpu")
    assert len(pr) == len(run.card("cpu")["pruned_channels"]) and (pr["before"] >= pr["after"]).all()
    q = quantization_data(run, "cpu")
    assert list(q["model"]) == ["fp32 (pruned)", "int8, QAT", "int8, PTQ"] and q["accuracy_vs_fp32_pts"].iloc[0] == 0
    placed = placement_data(run, "cpu")  # which kernels ran the two candidates
    assert list(placed["stage"]) == ["pruned", "qat_int8"] and (placed["nodes"] > 0).all()
    assert placed["float_nodes_in_int8"].iloc[0] == 0 < placed["float_nodes_in_int8"].iloc[1]
    prov = dict(zip(*provenance_data(run).to_dict("list").values()))
    assert prov["seeds"] == "train 0, search 0, finalize 0"
    assert {"cpu: runtime", "cpu-b: runtime", "cpu: protocol", "cpu: finalize"} <= set(prov)
    assert prov["cpu: runtime"].startswith("onnxruntime ")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# run in the page after plotly drew: the layout facts the test checks, in the title
_PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const figs = [...document.querySelectorAll('.fig')];
  document.title = 'PROBE' + JSON.stringify({
    figures: figs.length, drawn: figs.filter(f => f.querySelector('.main-svg')).length,
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    width: document.documentElement.clientWidth,
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent)});
}, 1000));
</script>"""


def _browse(page: Path, width: int) -> tuple[dict, list[str]]:
    """The probe's findings for ``page`` in headless Chromium at ``width`` px, and the console's error lines."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                _chromium(),
                *_FLAGS,
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--window-size={width},2000",
                "--virtual-time-budget=15000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    probe.unlink()
    found = re.search(r"<title>PROBE(.*?)</title>", dom.stdout)
    assert found, dom.stdout[:2000] + dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), [
        line for line in console if re.search(r"error|uncaught", line, re.I)
    ]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    require_system(_chromium() is not None, "Chromium", "apt-get install chromium")
    page = write_report(finished_run, png=False)
    text = page.read_text()
    assert "<script" in text and not re.search(r"<script[^>]*src=", text)  # plotly inlined: opens offline
    # fronts (both devices side by side), training, convergence; per device: predicted vs measured, pruning, breakdown
    n_figures = 3 + 3 * 2
    for width in (1200, 500):  # a laptop window, and the narrowest window headless Chromium opens (phone-like)
        found, errors = _browse(page, width)
        assert not errors, errors
        assert found["width"] <= width and found["figures"] == found["drawn"] == n_figures, found
        assert found["overflow"] <= 0, f"the page is {found['overflow']} px wider than a {width} px window"
        assert found["headings"][:3] == ["Summary", "Accuracy vs latency", "How good the evidence is"]
        assert found["headings"][-1] == "Provenance"
    shot = Path(tmp_path) / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                _chromium(),
                *_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                "--window-size=1200,2400",
                f"--screenshot={shot}",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=180,
        )
    assert shot.stat().st_size > 20_000  # a real picture, not a blank page
    shutil.copy(shot, finished_run / "report" / "screenshot.png")


def test_runs_compared_on_one_page(finished_run, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(finished_run, other, ignore=shutil.ignore_patterns("report"))
    page = write_comparison([finished_run, other], tmp_path / "cmp", png=False)
    text = page.read_text()
    assert text.count("class='finding'") == 4  # two runs x two devices
    fronts = pd.read_csv(tmp_path / "cmp" / "data" / "fronts.csv")
    assert set(fronts["run"]) == {str(finished_run), str(other)} and set(fronts["device"]) == {"cpu", "cpu-b"}
    hv = pd.read_csv(tmp_path / "cmp" / "data" / "search_convergence.csv")
    mine, theirs = (hv[hv["run"] == r]["value"].to_numpy() for r in (str(finished_run), str(other)))
    assert len(mine) == len(theirs) > 0 and (mine == theirs).all()  # a copy converges alike, on the shared scale
    summary = pd.read_csv(tmp_path / "cmp" / "data" / "summary.csv")
    assert len(summary) == 4 and summary["test_accuracy"].between(0, 1).all()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgenas.cli",
            "report",
            str(finished_run),
            str(other),
            "--out",
            str(tmp_path / "cli"),
            "--no-png",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "cli" / "report.html"), r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "edgenas.cli", "report", str(finished_run), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not an edgenas run" in r.stderr


def test_report_pngs_are_written_or_the_reason_is_said(finished_run, monkeypatch, capsys):
    require_system(_chromium() is not None, "Chromium", "apt-get install chromium")
    import plotly.io as pio

    write_report(finished_run)
    names = sorted(p.stem for p in (finished_run / "report" / "data").glob("*.csv"))
    pngs = {p.stem: p.read_bytes()[:8] for p in (finished_run / "report" / "png").glob("*.png")}
    tables = ("stages_", "candidates_", "lut_validation", "summary", "quantization_", "placement_", "provenance")
    figures = [n for n in names if not n.startswith(tables)]
    assert figures and all(pngs.get(n) == b"\x89PNG\r\n\x1a\n" for n in figures), (figures, sorted(pngs))

    def no_browser(*args, **kwargs):
        raise RuntimeError("Kaleido could not find a Chrome executable")

    monkeypatch.setattr(pio, "write_images", no_browser)
    page = write_report(finished_run).read_text()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report PNGs not written: Kaleido could not find a Chrome executable" in err[0]
    assert "PNGs not written: Kaleido could not find" in page


def test_a_difference_inside_the_splits_uncertainty_is_not_called_a_gain():
    from edgenas.reports import accuracy_margin_pts, difference_margin_pts
    from edgenas.reports._data import _change

    # 10,000 test images at 92 %: ±0.53 pt; 48 validation images at 50 %: ±14 pt
    assert accuracy_margin_pts(0.92, 10_000) == pytest.approx(1.96 * (0.92 * 0.08 / 10_000) ** 0.5 * 100)
    assert accuracy_margin_pts(0.5, 48) == pytest.approx(14.1, abs=0.1)
    assert accuracy_margin_pts(1.0, 48) > 0  # never a certainty from a small split
    # the tiny run's "+9.09 pt on the supernet" from 48 validation images
    margin = difference_margin_pts(0.5909, 0.50, 48)
    assert margin > 9.09
    assert "no measurable change" in _change(9.09, margin, "supernet accuracy")
    assert _change(1.2, difference_margin_pts(0.93, 0.918, 10_000), "test accuracy").startswith("gains 1.20 pt")
    assert _change(-1.2, 0.5, "test accuracy").startswith("gives up 1.20 pt")


def test_the_summary_states_each_accuracy_with_its_uncertainty(finished_run):
    run = RunFiles(finished_run)
    s = summary_data(run, "cpu")
    n = run.card("cpu")["data_sizes"]["test"]
    assert s["test_images"] == n and s["test_margin_pts"] == pytest.approx(
        1.96 * (max(s["test_accuracy"] * (1 - s["test_accuracy"]), 1 / n) / n) ** 0.5 * 100
    )
    assert f"±{s['test_margin_pts']:.2f} pt ({n:,} images)" in s["sentence"]
