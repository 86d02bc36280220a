"""The report: the data behind each figure, and the HTML as a browser shows it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.reports import (
    RunFiles,
    pareto_data,
    predicted_vs_measured_data,
    search_convergence_data,
    stage_table_data,
    training_budget_text,
    training_curve_data,
    write_report,
)
from tests._system import require_system


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory):
    """The tiny run taken through search and finalize."""
    run = tmp_path_factory.mktemp("report_run")
    data = yaml.safe_load(tiny_run.read_text())
    data["run_dir"] = str(run)
    data["finalize"] = {"distill_epochs": 1, "prune": {"step": 0.1, "max_steps": 1, "tolerance": 0.5},
                        "qat_epochs": 1, "lr": 0.05, "measure_rounds": 5,
                        "accept_failed_checks": True}  # near-tie logits of a barely trained model: see test_pipeline
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


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    require_system(_chromium() is not None, "Chromium", "apt-get install chromium")
    html = write_report(finished_run, png=False)
    text = html.read_text()
    assert "<script" in text and not re.search(r"<script[^>]*src=", text)  # plotly inlined: opens offline
    n_figures = len(re.findall(r"<div id='fig-", text))
    assert n_figures == 5  # training curves, search convergence, front, predicted vs measured, breakdown
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [_chromium(), *_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=15000", "--dump-dom", html.as_uri()],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if re.search(r"error|uncaught", line, re.I)]
    assert not errors, errors
    # every figure rendered: plotly adds its SVG layers inside each figure's div
    rendered = re.findall(r'<div id="fig-[^"]+" class="fig[^"]*js-plotly-plot', dom.stdout)
    assert len(rendered) == n_figures, dom.stdout[:2000]
    assert dom.stdout.count('class="main-svg"') >= 2 * n_figures
    shot = Path(tmp_path) / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_chromium(), *_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                        "--window-size=1200,2400", f"--screenshot={shot}", html.as_uri()],
                       capture_output=True, timeout=180)  # fmt: skip
    assert shot.stat().st_size > 20_000  # a real picture, not a blank page
    shutil.copy(shot, finished_run / "report" / "screenshot.png")


def test_report_pngs_are_written_or_the_reason_is_said(finished_run, monkeypatch, capsys):
    require_system(_chromium() is not None, "Chromium", "apt-get install chromium")
    import plotly.graph_objects as go

    write_report(finished_run)
    names = sorted(p.stem for p in (finished_run / "report" / "data").glob("*.csv"))
    pngs = {p.stem: p.read_bytes()[:8] for p in (finished_run / "report" / "png").glob("*.png")}
    figures = [n for n in names if not n.startswith(("stages_", "candidates_", "lut_validation"))]  # tables
    assert figures and all(pngs.get(n) == b"\x89PNG\r\n\x1a\n" for n in figures), (figures, sorted(pngs))

    def no_browser(*args, **kwargs):
        raise RuntimeError("Kaleido could not find a Chrome executable")

    monkeypatch.setattr(go.Figure, "write_image", no_browser)
    page = write_report(finished_run).read_text()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report PNGs not written: Kaleido could not find a Chrome executable" in err[0]
    assert "PNGs not written: Kaleido could not find" in page
