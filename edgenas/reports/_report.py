"""Drawing the report: plotly figures from the data of ``_data``, one self-contained HTML file.

The HTML inlines plotly's JavaScript once, so it opens offline. Each figure's data is also
written as CSV (``report/data``), and as PNG (``report/png``) with kaleido, which draws with
Chromium; where it cannot, the report says why (stderr and the page) and stays complete.
"""

from __future__ import annotations

import html
import json
import os
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from edgenas.io import atomic_write_text
from edgenas.reports._data import (
    RunFiles,
    block_breakdown_data,
    candidates_data,
    lut_validation_data,
    measurement_info,
    pareto_data,
    predicted_vs_measured_data,
    search_convergence_data,
    stage_table_data,
    training_budget_text,
    training_curve_data,
)

__all__ = ["pareto_figure", "predicted_vs_measured_figure", "write_report"]

_STYLE = {
    "trial": dict(color="#9aa5b1", size=6, symbol="circle"),
    "trial (over budget)": dict(color="#e4b4b4", size=6, symbol="x"),
    "pareto front": dict(color="#1f77b4", size=9, symbol="circle"),
    "MobileNetV3 reference": dict(color="#ff7f0e", size=11, symbol="diamond"),
    "finalized": dict(color="#2ca02c", size=14, symbol="star"),
}


def pareto_figure(data: pd.DataFrame, device: str, budget: float | None, memory: str = "") -> go.Figure:
    """Accuracy vs latency; ``memory`` names the RAM/flash budgets the over-budget trials may exceed."""
    fig = go.Figure()
    for kind, style in _STYLE.items():
        part = data[data["kind"] == kind] if len(data) else data
        if not len(part):
            continue
        text = part.get("name", part["arch"]).fillna(part["arch"]) if "name" in part else part["arch"]
        if "ram_kb" in part and part["ram_kb"].notna().any():
            text = text + "<br>RAM " + part["ram_kb"].map("{:.1f}".format) + " kB, flash " + \
                part["flash_kb"].map("{:.1f}".format) + " kB"
        name = f"{kind}: latency{memory}" if kind == "trial (over budget)" and memory else kind
        fig.add_trace(go.Scatter(x=part["latency_ms"], y=part["accuracy"], mode="markers", name=name, marker=style,
                                 text=text,
                                 hovertemplate="%{text}<br>%{x:.3f} ms, %{y:.4f}<extra></extra>"))  # fmt: skip
    front = data[data["kind"] == "pareto front"].sort_values("latency_ms") if len(data) else data
    if len(front):
        fig.add_trace(go.Scatter(x=front["latency_ms"], y=front["accuracy"], mode="lines", line=dict(color="#1f77b4"),
                                 showlegend=False, hoverinfo="skip"))  # fmt: skip
    if budget:
        fig.add_vline(x=budget, line_dash="dash", line_color="#d62728", annotation_text=f"budget {budget:g} ms")
    fig.update_layout(title=f"Accuracy vs latency on {device}", xaxis_title="latency (ms; predicted, finalized: "
                      "measured)", yaxis_title="top-1 accuracy (search: val; finalized: test)", height=480)  # fmt: skip
    return fig


def predicted_vs_measured_figure(data: pd.DataFrame, device: str) -> go.Figure:
    fig = go.Figure()
    if len(data):
        hi = float(max(data["predicted_ms"].max(), data["measured_ms"].max())) * 1.05
        fig.add_trace(go.Scatter(x=[0, hi, hi, 0], y=[0, hi * 1.1, hi * 0.9, 0], fill="toself", mode="none",
                                 fillcolor="rgba(44,160,44,0.12)", name="±10 %"))  # fmt: skip
        fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line=dict(color="black", dash="dot"),
                                 name="y = x"))  # fmt: skip
        for name, part in data.groupby("set"):
            fig.add_trace(go.Scatter(x=part["measured_ms"], y=part["predicted_ms"], mode="markers", name=name,
                                     text=part["arch"], hovertemplate="%{text}<br>measured %{x:.3f} ms, predicted "
                                     "%{y:.3f} ms<extra></extra>"))  # fmt: skip
    fig.update_layout(title=f"Predicted vs measured latency on {device}", xaxis_title="measured (ms)",
                      yaxis_title="predicted (ms)", height=480)  # fmt: skip
    return fig


def breakdown_figure(data: pd.DataFrame, device: str) -> go.Figure:
    labels = [f"{b} {k}" for b, k in zip(data["block"], data["key"])] if len(data) else []
    fig = go.Figure(go.Bar(x=data["ms"] if len(data) else [], y=labels, orientation="h"))
    fig.update_layout(title=f"Per-block latency of the finalized arch on {device} (table entries)",
                      xaxis_title="ms", yaxis=dict(autorange="reversed"), height=max(300, 24 * len(data) + 120),
                      margin=dict(l=320))  # fmt: skip
    return fig


def training_figure(data: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for col, name in (("val_largest", "largest subnet"), ("val_smallest", "smallest subnet")):
        fig.add_trace(go.Scatter(x=data["epoch"], y=data[col] * 100, mode="lines+markers", name=name))
    fig.update_layout(title="Supernet training: validation accuracy (BN recalibrated) per epoch",
                      xaxis_title="epoch", yaxis_title="validation accuracy (%)", template="plotly_white",
                      height=360)  # fmt: skip
    return fig


def convergence_figure(data: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for series, part in data.groupby("series", sort=False):
        error = series.startswith("predictor")
        fig.add_trace(go.Scatter(x=part["trials"], y=part["value"], name=series, mode="lines+markers" if error
                                 else "lines", yaxis="y2" if error else "y", line=dict(dash="dot") if error else None))
    fig.update_layout(title="Search convergence: hypervolume of each device's front after each trial",
                      xaxis_title="complete trials", yaxis_title="hypervolume (higher is better)",
                      yaxis2=dict(title="accuracy predictor error (pts, 5-fold MAE)", overlaying="y", side="right",
                                  rangemode="tozero"),
                      template="plotly_white", height=380)  # fmt: skip
    return fig


def _table_html(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "<p><em>not available yet</em></p>"
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="tbl")


def _png(fig: go.Figure, path: Path) -> str | None:
    """Write ``fig`` as a PNG; returns None, or why it could not be written (one line)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_image(str(path), width=1000, height=fig.layout.height or 480)
    except Exception as exc:  # kaleido raises its own types, e.g. when it finds no browser
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{first} (kaleido draws with Chromium: apt-get install chromium)"
    return None


def write_report(run_dir: str | os.PathLike, *, png: bool = True) -> Path:
    """Write ``run_dir/report/report.html`` (plus data CSVs and PNGs); returns the HTML path."""
    run = RunFiles(run_dir)
    out = Path(run_dir) / "report"
    (out / "data").mkdir(parents=True, exist_ok=True)
    budgets = {d: run.budgets(d) for d in run.devices}
    sections, figures, pngs, png_errors = [], [], [], []

    def add(fig: go.Figure, name: str, data: pd.DataFrame) -> None:
        data.to_csv(out / "data" / f"{name}.csv", index=False)
        figures.append((name, fig))
        if png and not png_errors:  # after one failure the others would fail the same way
            error = _png(fig, out / "png" / f"{name}.png")
            (png_errors.append(error) if error else pngs.append(name))

    sections.append(f"<h2>Supernet training</h2><p>{html.escape(training_budget_text(run))}</p>")
    d = training_curve_data(run)
    if len(d):
        add(training_figure(d), "training", d)
        sections.append("<div id='fig-training' class='fig'></div>")
    d = search_convergence_data(run)
    if len(d):
        sections.append("<h2>Search</h2>")
        add(convergence_figure(d), "search_convergence", d)
        sections.append("<div id='fig-search_convergence' class='fig'></div>")
    for device in run.devices:
        sections.append(f"<h2>Device <code>{html.escape(device)}</code></h2>")
        d = pareto_data(run, device)
        b = budgets[device]
        labels = {"ram_kb": "RAM", "flash_kb": "flash"}
        memory = "".join(f" or {label} {b[k]:g} kB" for k, label in labels.items() if k in b)
        add(pareto_figure(d, device, b.get("budget_ms"), memory), f"pareto_{device}", d)
        sections.append(f"<div id='fig-pareto_{device}' class='fig'></div>")
        cand = candidates_data(run, device)
        cand.to_csv(out / "data" / f"candidates_{device}.csv", index=False)
        if len(cand):
            p = html.escape(run.precision(device))
            sections.append(f"<h3>Candidates: the front of <code>{html.escape(device)}</code></h3><p>Accuracy "
                            "(supernet, validation), latency (the device's table, its precision " + p + "), "
                            "peak activation memory (RAM) and model file (flash) predicted at fp32 and int8, kB of "
                            "1024 bytes." + (" Budgets: " + ", ".join(f"{k} {v:g}" for k, v in b.items()) + "."
                                               if b else "") + "</p>" + _table_html(cand))  # fmt: skip
        d = predicted_vs_measured_data(run, device)
        add(predicted_vs_measured_figure(d, device), f"predicted_vs_measured_{device}", d)
        sections.append(f"<div id='fig-predicted_vs_measured_{device}' class='fig'></div>")
        d = block_breakdown_data(run, device)
        add(breakdown_figure(d, device), f"breakdown_{device}", d)
        sections.append(f"<div id='fig-breakdown_{device}' class='fig'></div>")
        st = stage_table_data(run, device)
        st.to_csv(out / "data" / f"stages_{device}.csv", index=False)
        card = run.card(device)
        sections.append("<h3>Finalize stage table</h3>")
        if card:
            arch, model, why = (html.escape(card[k] or "nothing") for k in ("arch", "chosen_model", "why"))
            sections.append(f"<p>Arch <code>{arch}</code>; deployed: <b>{model}</b> — {why}.</p>")
        sections.append(_table_html(st))
    lv = lut_validation_data(run)
    lv.to_csv(out / "data" / "lut_validation.csv", index=False)
    sections.append("<h2>Latency tables: held-out validation</h2>" + _table_html(lv))
    info = measurement_info(run)
    sections.append("<h2>How every figure was measured</h2><pre>" + html.escape(json.dumps(info, indent=1)) + "</pre>"
                    "<p>Latency: ONNX Runtime sessions, batch 1, timed in interleaved rounds beside a reference model; "
                    "the 10th percentile of all runs; table predictions are drift-corrected through the reference. "
                    "Peak memory: growth of the peak RSS of a fresh process that creates the session and runs it. "
                    "Search accuracies: supernet weights with recalibrated BatchNorm on the validation split; "
                    "finalized accuracies: the exported model on the test split.</p>")  # fmt: skip

    if png_errors:
        print(f"edgenas: report PNGs not written: {png_errors[0]}; the HTML and CSVs are complete "
              "(--no-png skips PNGs)", file=sys.stderr, flush=True)  # fmt: skip
    png_note = ("; PNG: <code>report/png</code>" if pngs and not png_errors else
                f"; PNGs not written: {html.escape(png_errors[0])}" if png_errors else "")  # fmt: skip

    from plotly.offline import get_plotlyjs

    scripts = [
        f"(function(f){{Plotly.newPlot('fig-{n}', f.data, f.layout, {{responsive: true}});}})({f.to_json()});"
        for n, f in figures
    ]
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>edgenas report: {html.escape(str(run_dir))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}} .fig{{min-height:300px}}
.tbl{{border-collapse:collapse}} .tbl td,.tbl th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}}
code{{font-size:90%}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>edgenas report</h1><p>Run directory <code>{html.escape(str(run_dir))}</code>; space
<code>{html.escape(str(run.config.get("space")))}</code>;
data <code>{html.escape(str(run.config["data"]["name"]))}</code>.
Figure data: <code>report/data/*.csv</code>{png_note}.</p>
{''.join(sections)}
<script type="text/javascript">{''.join(scripts)}</script>
</body></html>
"""
    return atomic_write_text(out / "report.html", page)
