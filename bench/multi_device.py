"""One search, two devices: two runtimes (ONNX Runtime and OpenVINO), precisions or thread counts on this CPU.

Takes the supernet of ``bench/supernet.py``, builds and validates a table per device (one
device: ``RUNTIME:PRECISION:THREADS``, runtime ``ort`` or ``openvino``; precision ``best``
builds both and keeps the one whose median predicted latency over 2,000 random archs is
lower), runs one search (the default sampler, ``--trials``) with accuracy and both
latencies as objectives and a budget per device, then reports each device's own front and
its winner (the most accurate arch within that device's budget) at several budget levels:
at level q each device's budget is the q-quantile of its own predicted latencies over 2,000
random archs, so both devices are asked for "equally fast" models on their own scale. The
search's budgets are the loosest level. Results go to
``bench/results/multi_device_<devices>.{json,md,png}``.

    python bench/multi_device.py                                  # ONNX Runtime fp32 vs OpenVINO (best precision)
    python bench/multi_device.py --devices ort:fp32:1,ort:int8:1   # fp32 vs int8 of ONNX Runtime
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _setup import LUT_FP32, add_supernet_args, md_code, quiet_optuna, supernet_bench
from scipy.stats import kendalltau

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LatencyTable, Predictor, build_table, make_backend, validate_table
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, device_front, pareto_rows, run_search

# tables other benches build on this CPU, reused where a device matches
KNOWN = {("ort", "fp32", 1): LUT_FP32, ("ort", "int8", 1): "runs/bench_deployed/lut_int8.json"}


def device_table(space, work: Path, runtime: str, precision: str, threads: int) -> Path:
    """The validated table of one device, built where missing."""
    device = "local-cpu" if runtime == "ort" else "openvino:CPU"
    path = Path(KNOWN.get((runtime, precision, threads), work / f"lut_{runtime}_{precision}_{threads}t.json"))
    backend = make_backend(device, threads=threads)
    build_table(space, backend, path, device=device, precision=precision, progress=False)
    if LatencyTable.load(path).validation is None:
        validate_table(path, backend, n=40, progress=False)
    return path


def figure(rows: list[dict], fronts: dict, level: dict, names: list[str]):
    """Accuracy vs latency on each device: trials, each device's front, both winners at one budget level."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"on {n}" for n in names])
    colors = {names[0]: "#1f77b4", names[1]: "#d62728"}
    for col, n in enumerate(names, start=1):
        lat = f"latency_ms:{n}"
        fig.add_trace(
            go.Scatter(
                x=[r[lat] for r in rows],
                y=[r["accuracy"] for r in rows],
                mode="markers",
                marker=dict(color="#c0c6cc", size=5),
                name="trial",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        front = fronts[n]
        fig.add_trace(
            go.Scatter(
                x=[r[lat] for r in front],
                y=[r["accuracy"] for r in front],
                mode="lines+markers",
                line=dict(color=colors[n]),
                name=f"{n} front",
                showlegend=True,
            ),
            row=1,
            col=col,
        )
        for m in names:
            win = level["winners"][m]
            fig.add_trace(
                go.Scatter(
                    x=[win[lat]],
                    y=[win["accuracy"]],
                    mode="markers",
                    showlegend=col == 1,
                    marker=dict(symbol="star", size=16, color=colors[m], line=dict(color="black", width=1)),
                    name=f"{m} winner (budget level {level['quantile']:g})",
                ),
                row=1,
                col=col,
            )
        fig.add_vline(x=level["budgets_ms"][n], line_dash="dash", line_color=colors[n], row=1, col=col)
        fig.update_xaxes(title_text=f"predicted latency on {n} (ms)", row=1, col=col)
    fig.update_yaxes(title_text="val accuracy (supernet)", row=1, col=1)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=120)
    p.add_argument(
        "--devices",
        default="ort:fp32:1,openvino:best:1",
        help="the two devices as precision:threads of ONNX Runtime on this CPU",
    )
    p.add_argument(
        "--quantiles",
        default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        help="budget levels: each device's budget is this quantile of its predicted latencies over 2,000 random archs",
    )
    add_supernet_args(p, workdir="runs/bench_multi")
    args = p.parse_args()
    quiet_optuna()

    work = Path(args.workdir)
    space, splits, supernet = supernet_bench(args)
    rng = np.random.default_rng(0)
    sample = [space.sample(rng) for _ in range(2000)]
    tables, picked = {}, {}
    for spec in args.devices.split(","):
        runtime, precision, threads = spec.split(":")
        options = ("fp32", "int8") if precision == "best" else (precision,)
        paths = {p: device_table(space, work, runtime, p, int(threads)) for p in options}
        medians = {
            p: float(np.median([Predictor(LatencyTable.load(path), space).predict(a) for a in sample]))
            for p, path in paths.items()
        }
        precision = min(medians, key=medians.get)
        picked[spec] = {"medians_ms": medians, "picked": precision}
        tables[f"{'onnxruntime' if runtime == 'ort' else 'openvino'}-{precision}-{threads}t"] = paths[precision]
    names = list(tables)
    predictors = {k: Predictor(LatencyTable.load(v), space) for k, v in tables.items()}
    predicted = {k: np.array([pr.predict(a) for a in sample]) for k, pr in predictors.items()}
    tau = kendalltau(predicted[names[0]], predicted[names[1]])[0]
    quantiles = sorted(float(q) for q in args.quantiles.split(","))
    levels = [
        {"quantile": q, "budgets_ms": {k: float(np.quantile(v, q)) for k, v in predicted.items()}} for q in quantiles
    ]

    evaluator = SubnetEvaluator(supernet, splits, seed=0)  # the search's default evaluation
    # the search's budgets: the loosest level (a trial is feasible when it meets either device's)
    devices = [DeviceObjective(k, predictors[k], levels[-1]["budgets_ms"][k]) for k in tables]
    storage = f"sqlite:///{(work / 'studies.db').resolve()}"
    tag = f"{'-'.join(names)}-q{quantiles[-1]:g}-n{args.trials}"
    config = SearchConfig(n_trials=args.trials, storage=storage, study_name=f"per-device-{tag}")
    study = run_search(space, evaluator, devices, config, work / f"search_per_device_{tag}", progress=False)
    rows, _ = pareto_rows(study)
    fronts = {k: device_front(rows, k) for k in names}
    for level in levels:
        level["winners"] = {}
        for k in names:  # the most accurate arch of the device's front within this level's budget
            ok = [r for r in fronts[k] if r[f"latency_ms:{k}"] <= level["budgets_ms"][k]]
            level["winners"][k] = ok[-1] if ok else None
        archs = {(w or {}).get("arch") for w in level["winners"].values()}
        level["winners_differ"] = None not in archs and len(archs) > 1

    result = {
        "kendall_tau_between_tables_over_2000_random_archs": tau,
        "trials": len(rows),
        "precision": picked,
        "runtimes": {k: LatencyTable.load(v).header["runtime"] for k, v in tables.items()},
        "table_validation": {k: LatencyTable.load(v).validation["heldout"] for k, v in tables.items()},
        "fronts": fronts,
        "levels": levels,
    }
    differ = [lv for lv in levels if lv["winners_differ"]]
    intro = [
        f"{k}: {result['runtimes'][k]}, held-out within ±10 % "
        f"{result['table_validation'][k]['within_10pct']:.0%}, Kendall τ "
        f"{result['table_validation'][k]['kendall_tau']:.3f}"
        for k in names
    ]
    for spec, v in picked.items():
        if len(v["medians_ms"]) > 1:
            medians = ", ".join(f"{p} {m:.3f} ms" for p, m in v["medians_ms"].items())
            intro.append(f"precision `best` for {spec}: median predicted latency {medians} -> {v['picked']}")
    cpu = LatencyTable.load(tables[names[0]]).header["cpu"]
    md = [
        f"`python bench/multi_device.py --devices {args.devices}` on {cpu}: " + "; ".join(intro) + ".",
        "",
        f"{len(rows)} trials; Kendall tau between the two tables' predictions over 2,000 random archs: {tau:.3f}. "
        f"Front sizes (all trials within the loosest budget): "
        f"{', '.join(f'{k} {len(f)}' for k, f in fronts.items())}.",
        "",
        f"| budget level | {names[0]} budget (ms) | {names[0]} winner | val acc | {names[1]} budget (ms) | "
        f"{names[1]} winner | val acc | differ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        cells = []
        for k in names:
            w = lv["winners"][k]
            cells += [
                f"{lv['budgets_ms'][k]:.3f}",
                md_code(w["arch"]) if w else "none",
                f"{w['accuracy']:.4f}" if w else "",
            ]
        differs = "yes" if lv["winners_differ"] else "no"
        md.append(f"| q = {lv['quantile']:g} | " + " | ".join(cells) + f" | {differs} |")
    md += ["", f"Winners differ at {len(differ)} of {len(levels)} budget levels."]
    for lv in differ:  # why: each winner seen from the other device
        notes = []
        for k, other in ((names[0], names[1]), (names[1], names[0])):
            w, b = lv["winners"][k], lv["budgets_ms"][other]
            ms = w[f"latency_ms:{other}"]
            gain = lv["winners"][other]["accuracy"] - w["accuracy"]
            why = f"over its {b:.3f} ms budget" if ms > b else f"within budget; {other}'s own winner: {gain:+.4f} acc"
            notes.append(f"{k}'s winner takes {ms:.3f} ms on {other} ({why})")
        md.append(f"- q = {lv['quantile']:g}: " + "; ".join(notes) + ".")
    result["winners_differ_levels"] = [lv["quantile"] for lv in differ]
    out = Path(args.out)
    stem = f"multi_device_{'_'.join(names)}"
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")

    def gap(lv: dict) -> float:  # how much the two winners' accuracies differ
        return abs(lv["winners"][names[0]]["accuracy"] - lv["winners"][names[1]]["accuracy"])

    shown = max(differ, key=gap) if differ else levels[len(levels) // 2]  # the plot: the widest difference
    figure(rows, fronts, shown, names).write_image(str(out / f"{stem}.png"), width=1200, height=480)
    print("\n".join(md))


if __name__ == "__main__":
    main()
