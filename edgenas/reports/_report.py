"""Drawing the report: plotly figures from the data of ``_data``, one self-contained HTML file.

The page reads top-down in the order a person asks: what each device got (summary), the
accuracy-latency fronts, how good the evidence is (training, search convergence, latency
table validation), the compression story per device, and provenance. It inlines plotly's
JavaScript once, so it opens offline; tables sit in horizontally scrolling boxes and the
figures resize, so nothing runs off the page at 1200 px or on a phone. Each figure's and
table's data is also written as CSV (``report/data``), each figure as PNG (``report/png``)
with kaleido, which draws with Chromium; where it cannot, the report says why (stderr and
the page) and stays complete.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from edgenas.io import atomic_write_text
from edgenas.layout import ModelCard
from edgenas.reports._data import (
    RunFiles,
    block_breakdown_data,
    candidates_data,
    lut_validation_data,
    measurement_info,
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
)

__all__ = [
    "comparison_figure",
    "fronts_figure",
    "people_table",
    "predicted_vs_measured_figure",
    "write_comparison",
    "write_report",
]

logger = logging.getLogger(__name__)

_STYLE = {
    "trial": dict(color="#9aa5b1", size=6, symbol="circle"),
    "trial (over budget)": dict(color="#e4b4b4", size=6, symbol="x"),
    "pareto front": dict(color="#1f77b4", size=9, symbol="circle"),
    "MobileNetV3 reference": dict(color="#ff7f0e", size=11, symbol="diamond"),
    "finalized": dict(color="#2ca02c", size=14, symbol="star"),
}

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:16px 24px;max-width:1200px;box-sizing:border-box;
line-height:1.45;color:#1d232a}
h1{font-size:1.6em} h2{margin-top:2em;border-bottom:1px solid #ccd;padding-bottom:4px} h3{margin-top:1.5em}
.fig{width:100%;min-height:300px} .scroll{overflow-x:auto;max-width:100%}
.tbl{border-collapse:collapse;font-size:0.92em} .tbl td,.tbl th{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap} .tbl th{background:#f4f6f8;white-space:normal;vertical-align:bottom}
.tbl td:first-child,.tbl th:first-child{text-align:left} .text td,.text th{text-align:left;white-space:normal}
.tbl code{white-space:normal;word-break:break-all}
.finding{font-size:1.08em;background:#f1f7ee;border-left:4px solid #2ca02c;padding:8px 14px}
code{font-size:90%} details pre{overflow-x:auto;white-space:pre-wrap;word-break:break-all;font-size:0.85em}
.note{color:#555;font-size:0.92em}
@media (max-width:700px){body{padding:8px 10px} h1{font-size:1.3em} .tbl{font-size:0.82em}}
"""


# ---------------------------------------------------------------------------------------- figures
def _device_panels(devices: list[str], title: str, x_title: str, y_title: str) -> go.Figure:
    """One accuracy-latency panel per device, side by side on shared axes (titled when there are several)."""
    fig = make_subplots(
        rows=1,
        cols=len(devices),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=devices if len(devices) > 1 else None,
    )
    fig.update_xaxes(matches="x", title_text=x_title)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, height=500, template="plotly_white", legend=dict(orientation="h", y=-0.22))
    return fig


def fronts_figure(data: dict[str, pd.DataFrame], budgets: dict[str, dict[str, float]]) -> go.Figure:
    """Accuracy vs latency, one panel per device on shared axes; over-budget trials labelled with every budget."""
    devices = list(data)
    title = "Accuracy vs latency" + (" per device, on one scale" if len(devices) > 1 else f" on {devices[0]}")
    fig = _device_panels(
        devices,
        title,
        "latency (ms; search: predicted, finalized: measured)",
        "top-1 accuracy (search: val; finalized: test)",
    )
    for col, device in enumerate(devices, start=1):
        for trace in _front_traces(data[device], budgets[device], first=col == 1):
            fig.add_trace(trace, row=1, col=col)
        if budgets[device].get("budget_ms"):
            fig.add_vline(
                x=budgets[device]["budget_ms"],
                line_dash="dash",
                line_color="#d62728",
                row=1,
                col=col,
                annotation_text=f"budget {budgets[device]['budget_ms']:g} ms",
            )
    return fig


def _front_traces(data: pd.DataFrame, budget: dict[str, float], first: bool) -> list[go.Scatter]:
    memory = "".join(
        f" or {label} {budget[k]:g} kB" for k, label in (("ram_kb", "RAM"), ("flash_kb", "flash")) if k in budget
    )
    traces = []
    for kind, style in _STYLE.items():
        part = data[data["kind"] == kind] if len(data) else data
        if not len(part):
            continue
        text = part["name"].fillna(part["arch"]) if "name" in part else part["arch"]
        if "ram_kb" in part and part["ram_kb"].notna().any():
            text = (
                text
                + "<br>RAM "
                + part["ram_kb"].map("{:.1f}".format)
                + " kB, flash "
                + part["flash_kb"].map("{:.1f}".format)
                + " kB"
            )
        name = f"{kind}: latency{memory}" if kind == "trial (over budget)" and memory else kind
        traces.append(
            go.Scatter(
                x=part["latency_ms"],
                y=part["accuracy"],
                mode="markers",
                name=name,
                marker=style,
                text=text,
                legendgroup=kind,
                showlegend=first,
                hovertemplate="%{text}<br>%{x:.3f} ms, %{y:.4f}<extra></extra>",
            )
        )
    front = data[data["kind"] == "pareto front"].sort_values("latency_ms") if len(data) else data
    if len(front):
        traces.append(
            go.Scatter(
                x=front["latency_ms"],
                y=front["accuracy"],
                mode="lines",
                showlegend=False,
                line=dict(color="#1f77b4"),
                hoverinfo="skip",
            )
        )
    return traces


def predicted_vs_measured_figure(data: pd.DataFrame, device: str) -> go.Figure:
    fig = go.Figure()
    if len(data):
        hi = float(max(data["predicted_ms"].max(), data["measured_ms"].max())) * 1.05
        fig.add_trace(
            go.Scatter(
                x=[0, hi, hi, 0],
                y=[0, hi * 1.1, hi * 0.9, 0],
                fill="toself",
                mode="none",
                fillcolor="rgba(44,160,44,0.12)",
                name="±10 %",
            )
        )
        fig.add_trace(
            go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line=dict(color="black", dash="dot"), name="y = x")
        )
        for name, part in data.groupby("set"):
            fig.add_trace(
                go.Scatter(
                    x=part["measured_ms"],
                    y=part["predicted_ms"],
                    mode="markers",
                    name=name,
                    text=part["arch"],
                    hovertemplate="%{text}<br>measured %{x:.3f} ms, predicted %{y:.3f} ms<extra></extra>",
                )
            )
    fig.update_layout(
        title=f"Predicted vs measured latency on {device}",
        xaxis_title="measured (ms)",
        yaxis_title="predicted (ms)",
        height=460,
        template="plotly_white",
    )
    return fig


def breakdown_figure(data: pd.DataFrame, device: str) -> go.Figure:
    labels = [f"{b} {k}" for b, k in zip(data["block"], data["key"])] if len(data) else []
    fig = go.Figure(go.Bar(x=data["ms"] if len(data) else [], y=labels, orientation="h"))
    fig.update_layout(
        title=f"Per-block latency of the finalized arch on {device} (table entries)",
        xaxis_title="ms",
        yaxis=dict(autorange="reversed", automargin=True),
        height=max(300, 24 * len(data) + 120),
        template="plotly_white",
    )
    return fig


def pruning_figure(data: pd.DataFrame, device: str) -> go.Figure:
    fig = go.Figure()
    if data["before"].notna().any():
        fig.add_trace(go.Bar(x=data["layer"], y=data["before"], name="before pruning", marker_color="#c5d3e0"))
    fig.add_trace(go.Bar(x=data["layer"], y=data["after"], name="after pruning", marker_color="#1f77b4"))
    fig.update_layout(
        title=f"Output channels per convolution on {device}",
        barmode="overlay",
        height=340,
        yaxis_title="channels",
        template="plotly_white",
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


def training_figure(data: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for col, name in (("val_largest", "largest subnet"), ("val_smallest", "smallest subnet")):
        fig.add_trace(go.Scatter(x=data["epoch"], y=data[col] * 100, mode="lines+markers", name=name))
    fig.update_layout(
        title="Supernet training: validation accuracy (BN recalibrated) per epoch",
        xaxis_title="epoch",
        yaxis_title="validation accuracy (%)",
        template="plotly_white",
        height=360,
    )
    return fig


def convergence_figure(data: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for series, part in data.groupby("series", sort=False):
        error = series.startswith("predictor")
        fig.add_trace(
            go.Scatter(
                x=part["trials"],
                y=part["value"],
                name=series,
                mode="lines+markers" if error else "lines",
                yaxis="y2" if error else "y",
                line=dict(dash="dot") if error else None,
            )
        )
    fig.update_layout(
        title="Search convergence: hypervolume of each device's front after each trial",
        xaxis_title="complete trials",
        yaxis_title="hypervolume (higher is better)",
        yaxis2=dict(title="predictor error (pts)", overlaying="y", side="right", rangemode="tozero"),
        template="plotly_white",
        height=380,
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


# ---------------------------------------------------------------------------------------- tables for people
def _pct(v: float) -> str:
    return f"{v * 100:.2f} %"


def _pts(v: float) -> str:
    return f"{v:+.2f} pt"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _num(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


def _code(v: str) -> str:
    return f"<code>{html.escape(str(v))}</code>"


_STAGES = [
    ("stage", "stage", str),
    ("precision", "precision", str),
    ("test_accuracy", "test accuracy", _pct),
    ("latency_ms", "latency (ms)", _num(3)),
    ("speedup_vs_teacher", "speed-up vs teacher", _x),
    ("size_mb", "file (MB)", _num(3)),
    ("size_vs_teacher_pct", "file vs teacher", lambda v: f"{v:+.0f} %"),
    ("peak_memory_mb", "session peak (MB)", _num(1)),
    ("flash", "flash kB (predicted)", str),
    ("ram", "RAM kB (predicted)", str),
]
_CANDIDATES = [
    ("arch", "arch", _code),
    ("val_accuracy_pct", "val accuracy", lambda v: f"{v:.2f} %"),
    ("latency_ms", "latency (ms)", _num(3)),
    ("ram_kb_fp32", "RAM kB fp32", _num(1)),
    ("ram_kb_int8", "RAM kB int8", _num(1)),
    ("flash_kb_fp32", "flash kB fp32", _num(1)),
    ("flash_kb_int8", "flash kB int8", _num(1)),
    ("params", "params", _num(0)),
    ("mmacs", "MMACs", _num(2)),
]
_QUANT = [
    ("model", "model", str),
    ("file", "file", _code),
    ("test_accuracy", "test accuracy", _pct),
    ("accuracy_vs_fp32_pts", "vs fp32", _pts),
    ("latency_ms", "latency (ms)", _num(3)),
    ("speedup_vs_fp32", "speed-up vs fp32", _x),
    ("size_mb", "file (MB)", _num(3)),
]
_PLACEMENT = [
    ("stage", "candidate", _code),
    ("nodes", "nodes", _num(0)),
    ("executed_by", "executed by (nodes)", str),
    ("fallbacks", "fallbacks", _num(0)),
    ("fallback_nodes", "first fallbacks", str),
    ("float_nodes_in_int8", "float nodes in int8", _num(0)),
    ("conversion_share", "time in (de)quantize", lambda v: _pct(v) if v == v and v is not None else "-"),
    ("costliest", "costliest ops (share of time)", str),
]
_VALIDATION = [
    ("device", "device", str),
    ("precision", "precision", str),
    ("entries", "entries", _num(0)),
    ("heldout", "held-out subnets", _num(0)),
    ("within_5pct", "within ±5 %", lambda v: f"{v * 100:.0f} %"),
    ("within_10pct", "within ±10 %", lambda v: f"{v * 100:.0f} %"),
    ("mape_pct", "MAPE", lambda v: f"{v:.1f} %"),
    ("kendall_tau", "Kendall tau", _num(3)),
    ("calibration", "calibration", str),
]
_SUMMARY = [
    ("device", "device", str),
    ("file", "deployed file", _code),
    ("runtime", "runtime", str),
    ("precision", "precision", str),
    ("test_accuracy", "test accuracy", _pct),
    ("test_margin_pts", "± (95 %, split size)", lambda v: "n/a" if v is None or v != v else f"±{v:.2f} pt"),
    ("latency_ms", "latency (ms)", _num(3)),
    ("size_mb", "file (MB)", _num(3)),
    ("activation_kb", "RAM kB (activations)", _num(1)),
    ("peak_memory_mb", "session peak (MB)", _num(1)),
    ("accuracy_change_pts", "accuracy vs teacher", _pts),
    ("speedup_vs_teacher", "speed-up vs teacher", _x),
    ("size_vs_teacher", "file vs teacher", _x),
]


def _measured(measured: float | None, predicted: float | None) -> str:
    """``1,234.5 (1,230.0)``: a measured figure with its prediction in brackets."""

    def text(v: float | None) -> str:
        return "–" if v is None or v != v else f"{v:,.1f}"

    return text(measured) + ("" if predicted is None or predicted != predicted else f" ({text(predicted)})")


def people_table(df: pd.DataFrame, columns: list[tuple[str, str, Callable]], *, text: bool = False) -> str:
    """``df`` as an HTML table with headers and units for people; missing values print as an en dash.

    ``text``: every column left-aligned and wrapping (a table of words, not of figures).
    """
    if df is None or not len(df):
        return "<p><em>not available in this run</em></p>"
    cols = [(c, h, f) for c, h, f in columns if c in df.columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, f in cols)
    rows = []
    for r in df.to_dict("records"):
        rows.append("<tr>" + "".join(f"<td>{_cell(r[c], f)}</td>" for c, _, f in cols) + "</tr>")
    kind = "tbl text" if text else "tbl"
    return f"<div class='scroll'><table class='{kind}'><tr>{head}</tr>{''.join(rows)}</table></div>"


# ---------------------------------------------------------------------------------------- the page
class _Page:
    """Collects the figures of one page and writes each one's CSV and PNG beside it."""

    def __init__(self, out: Path, png: bool):
        self.out, self.png = out, png
        self.figures: list[tuple[str, go.Figure]] = []
        self.pngs: list[str] = []
        self.png_errors: list[str] = []
        (out / "data").mkdir(parents=True, exist_ok=True)

    def csv(self, data: pd.DataFrame, name: str) -> None:
        data.to_csv(self.out / "data" / f"{name}.csv", index=False)

    def figure(self, fig: go.Figure, name: str, data: pd.DataFrame) -> str:
        self.csv(data, name)
        self.figures.append((name, fig))
        return f"<div id='fig-{html.escape(name)}' class='fig'></div>"

    def write_pngs(self) -> None:
        """Every figure's PNG, drawn in one browser session (one per figure took ~6 s each)."""
        if not self.png or not self.figures or self.pngs or self.png_errors:
            return
        error = _pngs([f for _, f in self.figures], [self.out / "png" / f"{n}.png" for n, _ in self.figures])
        if error:
            self.png_errors.append(error)
        else:
            self.pngs = [n for n, _ in self.figures]

    def table(self, df: pd.DataFrame, name: str, columns: list[tuple[str, str, Callable]], text: bool = False) -> str:
        self.csv(df, name)
        return people_table(df, columns, text=text)

    def scripts(self) -> str:
        return "".join(
            f"(function(f){{Plotly.newPlot('fig-{n}', f.data, f.layout, {{responsive: true}});}})({f.to_json()});"
            for n, f in self.figures
        )


def _pngs(figs: list[go.Figure], paths: list[Path]) -> str | None:
    """Write each figure as a PNG; returns None, or why they could not be written (one line)."""
    import plotly.io as pio

    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido)"
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        pio.write_images(figs, [str(p) for p in paths], width=1100, height=[f.layout.height or 480 for f in figs])
    except Exception as exc:  # kaleido raises its own types, e.g. when it finds no browser
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{first} (kaleido draws with Chromium: apt-get install chromium)"
    return None


def _summary_section(run: RunFiles, page: _Page) -> str:
    rows = [s for s in (summary_data(run, d) for d in run.devices) if s]
    missing = [d for d in run.devices if not run.card(d)]
    parts = [f"<p class='finding'><b>{html.escape(s['device'])}</b>: {html.escape(s['sentence'])}</p>" for s in rows]
    if missing:
        parts.append(
            f"<p class='note'>Not finalized yet: {', '.join(map(_code, missing))} (run "
            "<code>edgenas finalize</code>).</p>"
        )
    if not rows:
        return "<h2>Summary</h2>" + "".join(parts)
    data = pd.DataFrame(rows).drop(columns=["sentence"])
    page.csv(data, "summary")
    note = (
        "<p class='note'>Test accuracy of the deployed file as its runtime runs it; latency measured on the "
        "device in one interleaved batch with the teacher (batch 1); RAM: the activations alive at once along "
        "the file's graph; session peak: the runtime process's peak memory growth.</p>"
    )
    return "<h2>Summary</h2>" + "".join(parts) + transposed_table(data, "device", _SUMMARY[1:]) + note


def transposed_table(df: pd.DataFrame, key: str, columns: list[tuple[str, str, Callable]]) -> str:
    """One column per row of ``df`` (headed by its ``key``), one row per figure: narrow for a few devices."""
    head = "<th></th>" + "".join(f"<th>{html.escape(str(k))}</th>" for k in df[key])
    body = "".join(
        f"<tr><td>{html.escape(h)}</td>" + "".join(f"<td>{_cell(v, f)}</td>" for v in df[c]) + "</tr>"
        for c, h, f in columns
        if c in df.columns
    )
    return f"<div class='scroll'><table class='tbl'><tr>{head}</tr>{body}</table></div>"


def _cell(v: object, f: Callable) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f(v) if f is _code else html.escape(f(v))


def _fronts_section(run: RunFiles, page: _Page) -> str:
    data = {d: pareto_data(run, d) for d in run.devices}
    budgets = {d: run.budgets(d) for d in run.devices}
    html_ = ["<h2>Accuracy vs latency</h2>"]
    fig = fronts_figure(data, budgets)
    html_.append(page.figure(fig, "fronts", pd.concat([df.assign(device=d) for d, df in data.items()])))
    for device in run.devices:
        b = budgets[device]
        units = {"budget_ms": ("latency", "ms"), "ram_kb": ("RAM", "kB"), "flash_kb": ("flash", "kB")}
        said = ", ".join(f"{units[k][0]} <= {v:g} {units[k][1]}" for k, v in b.items())
        html_.append(
            f"<details><summary>Candidates of {_code(device)}'s front ({len(run.front(device))} archs"
            f"{'; budgets ' + html.escape(said) if said else ''})</summary><p class='note'>Accuracy: the "
            "supernet on validation images; latency: the device's table at its precision "
            f"({html.escape(run.precision(device))}); RAM (peak activations) and flash (model file) "
            "predicted at fp32 and int8, kB of 1024 bytes.</p>"
            + page.table(candidates_data(run, device), f"candidates_{device}", _CANDIDATES)
            + "</details>"
        )
    return "".join(html_)


def _evidence_section(run: RunFiles, page: _Page) -> str:
    parts = [
        "<h2>How good the evidence is</h2>",
        f"<h3>Supernet training</h3><p>{html.escape(training_budget_text(run))}</p>",
    ]
    d = training_curve_data(run)
    if len(d):
        parts.append(page.figure(training_figure(d), "training", d))
    d = search_convergence_data(run)
    if len(d):
        parts.append("<h3>Search convergence</h3>" + page.figure(convergence_figure(d), "search_convergence", d))
    parts.append(
        "<h3>Ranking fidelity</h3><p class='note'>Not measured in a run (it takes stand-alone training "
        "of many subnets): <code>bench/ranking.py</code> measures how the supernet's ranking agrees with "
        "stand-alone training (Kendall tau), and the README gives its figures.</p>"
    )
    parts.append(
        "<h3>Latency tables: predicted vs measured</h3>"
        + page.table(lut_validation_data(run), "lut_validation", _VALIDATION)
    )
    for device in run.devices:
        d = predicted_vs_measured_data(run, device)
        parts.append(page.figure(predicted_vs_measured_figure(d, device), f"predicted_vs_measured_{device}", d))
    return "".join(parts)


def _compression_section(run: RunFiles, device: str, page: _Page) -> str:
    card = run.card(device)
    parts = [f"<h2>Compression on {_code(device)}</h2>"]
    if not card:
        return parts[0] + "<p><em>not finalized in this run</em></p>"
    parts.append(
        f"<p>Arch {_code(card['arch'])}; teacher: {html.escape(card.get('teacher', 'largest subnet'))}; "
        f"deployed: <b>{html.escape(str(ModelCard(card).deployed_file or 'nothing'))}</b> — "
        f"{html.escape(card['why'])}.</p>"
    )
    stages = stage_table_data(run, device)
    page.csv(stages, f"stages_{device}")
    shown = stages.assign(
        flash=[_measured(m, p) for m, p in zip(stages["size_kb"], stages["predicted_size_kb"])],
        ram=[_measured(m, p) for m, p in zip(stages["activation_kb"], stages["predicted_activation_kb"])],
    )
    parts.append(people_table(shown, _STAGES))
    parts.append(
        "<p class='note'>Every stage's file timed in one interleaved batch on the device (batch 1); "
        "flash: the file's bytes; RAM: the activations alive at once along its graph, beside the "
        "predictions from the blocks alone.</p>"
    )
    d = pruning_data(run, device)
    steps = card.get("prune_steps") or []
    kept = sum(1 for s in steps if s.get("kept")) - 1 if steps else 0
    parts.append(
        f"<h3>Pruning</h3><p>{max(kept, 0)} of {max(len(steps) - 1, 0)} pruning steps kept (L1 "
        "structured, each finetuned with distillation and kept while validation accuracy stays within "
        "the tolerance).</p>" + page.figure(pruning_figure(d, device), f"pruning_{device}", d)
    )
    parts.append(
        "<h3>Quantization: QAT vs PTQ</h3>"
        + page.table(quantization_data(run, device), f"quantization_{device}", _QUANT)
    )
    placed = placement_data(run, device)
    if not placed.empty:
        parts.append(
            "<h3>Which kernel ran each node</h3>"
            + page.table(placed, f"placement_{device}", _PLACEMENT)
            + "<p class='note'>As the device's runtime reports it (ONNX Runtime's profiler, OpenVINO's counters, "
            "ExecuTorch's program). A fallback: a node on another execution provider than the first asked for, "
            "an OpenVINO reference kernel, an ExecuTorch portable kernel. Float nodes inside an int8 graph and "
            "the conversions around them are what an int8 file can lose its speed to.</p>"
        )
    d = block_breakdown_data(run, device)
    parts.append(page.figure(breakdown_figure(d, device), f"breakdown_{device}", d))
    return "".join(parts)


def _provenance_section(run: RunFiles, page: _Page) -> str:
    rows = page.table(provenance_data(run), "provenance", [("what", "what", str), ("value", "value", str)], text=True)
    raw = {
        "config": run.config,
        "tables": measurement_info(run),
        "cards": {d: {k: v for k, v in (run.card(d) or {}).items() if k != "stages"} for d in run.devices},
    }
    return (
        "<h2>Provenance</h2>" + rows + "<p class='note'>Latency: sessions of the device's runtime, batch 1, "
        "timed in interleaved rounds beside a reference model; the protocol's quantile of all runs; table "
        "predictions drift-corrected through the reference. Search accuracies: supernet weights with "
        "recalibrated BatchNorm on validation images; finalized accuracies: the exported files on the test "
        "split.</p><details><summary>Raw record (config, table headers, model cards)</summary><pre>"
        + html.escape(json.dumps(raw, indent=1, default=str))
        + "</pre></details>"
    )


def _html(title: str, intro: str, sections: list[str], page: _Page) -> str:
    from plotly.offline import get_plotlyjs

    page.write_pngs()
    if page.png_errors:
        logger.warning(
            f"edgenas: report PNGs not written: {page.png_errors[0]}; the HTML and CSVs are complete "
            "(--no-png skips PNGs)",
        )
    png_note = (
        "; PNG: <code>report/png</code>"
        if page.pngs and not page.png_errors
        else f"; PNGs not written: {html.escape(page.png_errors[0])}"
        if page.png_errors
        else ""
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>{html.escape(title)}</h1><p>{intro} Figure and table data: <code>report/data/*.csv</code>{png_note}.</p>
{"".join(sections)}
<script type="text/javascript">{page.scripts()}</script>
</body></html>
"""


def write_report(run_dir: str | os.PathLike, *, png: bool = True) -> Path:
    """Write ``run_dir/report/report.html`` (plus data CSVs and PNGs); returns the HTML path."""
    run = RunFiles(run_dir)
    page = _Page(Path(run_dir) / "report", png)
    sections = [
        _summary_section(run, page),
        _fronts_section(run, page),
        _evidence_section(run, page),
        *(_compression_section(run, d, page) for d in run.devices),
        _provenance_section(run, page),
    ]
    intro = (
        f"Run directory {_code(run_dir)}; space {_code(run.config.get('space'))}; data "
        f"{_code(run.config['data']['name'])}; devices {', '.join(map(_code, run.devices))}."
    )
    return atomic_write_text(page.out / "report.html", _html("edgenas report", intro, sections, page))


def comparison_figure(fronts: dict[str, dict[str, pd.DataFrame]]) -> go.Figure:
    """Each device's front (and finalized model) of every run overlaid, one panel per device on shared axes."""
    devices = list(dict.fromkeys(d for per_run in fronts.values() for d in per_run))
    title = "Fronts of the runs compared" + (f" on {devices[0]}" if len(devices) == 1 else "")
    fig = _device_panels(
        devices, title, "latency (ms; front: predicted, star: measured)", "top-1 accuracy (front: val; star: test)"
    )
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for i, (name, per_run) in enumerate(fronts.items()):
        color = colors[i % len(colors)]
        for col, device in enumerate(devices, start=1):
            data = per_run.get(device)
            if data is None or not len(data):
                continue
            front = data[data["kind"] == "pareto front"].sort_values("latency_ms")
            final = data[data["kind"] == "finalized"]
            fig.add_trace(
                go.Scatter(
                    x=front["latency_ms"],
                    y=front["accuracy"],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line=dict(color=color),
                    text=front["arch"],
                    hovertemplate=f"{html.escape(name)}<br>%{{text}}<br>%{{x:.3f}} ms, %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            if len(final):
                fig.add_trace(
                    go.Scatter(
                        x=final["latency_ms"],
                        y=final["accuracy"],
                        mode="markers",
                        name=f"{name}: finalized",
                        legendgroup=name,
                        showlegend=False,
                        marker=dict(color=color, size=14, symbol="star"),
                        text=final["arch"],
                        hovertemplate=f"{html.escape(name)} finalized<br>%{{text}}<br>%{{x:.3f}} "
                        "ms (measured), %{y:.4f} (test)<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
    return fig


def _compared_convergence(runs: dict[str, RunFiles], page: _Page) -> str:
    """Hypervolume against trials of every run, on one latency scale per device (the slowest trial of all runs)."""
    slowest: dict[str, float] = {}
    for run in runs.values():
        trials = run.trials()
        for d in run.devices:
            if len(trials):
                slowest[d] = max(slowest.get(d, 0.0), float(trials[f"latency_ms:{d}"].max()))
    data = pd.concat([search_convergence_data(run, slowest).assign(run=name) for name, run in runs.items()])
    data = data[data["series"].str.startswith("hypervolume")]
    if not len(data):
        return "<p><em>no trials in these runs</em></p>"
    data = data.assign(series=data["run"] + ": " + data["series"])
    note = (
        "<p class='note'>Each device's latency is scaled by the slowest trial of all the runs compared, so "
        "their hypervolumes share one scale.</p>"
    )
    return page.figure(convergence_figure(data), "search_convergence", data) + note


def write_comparison(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, *, png: bool = True) -> Path:
    """One page comparing runs: their fronts overlaid per device, a summary row per run and device."""
    runs = {str(d): RunFiles(d) for d in run_dirs}
    if len(runs) < 2:
        raise ValueError(f"a comparison needs two or more different run directories, got {list(runs)}")
    page = _Page(Path(out_dir), png)
    fronts = {name: {d: pareto_data(run, d) for d in run.devices} for name, run in runs.items()}
    data = pd.concat([df.assign(run=name, device=d) for name, per in fronts.items() for d, df in per.items()])
    rows = [{"run": name, **s} for name, run in runs.items() for s in (summary_data(run, d) for d in run.devices) if s]
    table = page.table(
        pd.DataFrame(rows).drop(columns=["sentence"], errors="ignore"), "summary", [("run", "run", _code), *_SUMMARY]
    )
    findings = "".join(
        f"<p class='finding'><b>{html.escape(r['run'])}</b>, {html.escape(r['device'])}: "
        f"{html.escape(r['sentence'])}</p>"
        for r in rows
    )
    sections = [
        "<h2>Summary</h2>" + findings + table,
        "<h2>Accuracy vs latency</h2>" + page.figure(comparison_figure(fronts), "fronts", data),
        "<h2>Search convergence</h2>" + _compared_convergence(runs, page),
    ]
    intro = "Runs " + ", ".join(map(_code, runs)) + "; each run's own report: <code>RUN_DIR/report/report.html</code>."
    return atomic_write_text(page.out / "report.html", _html("edgenas comparison", intro, sections, page))
