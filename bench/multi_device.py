"""One search, several devices: the runtimes present on this CPU (ONNX Runtime, OpenVINO, ExecuTorch with
XNNPACK, ncnn), or precisions and thread counts of one of them.

Takes the supernet of ``bench/supernet.py``, builds and validates a table per device (one device:
``RUNTIME:PRECISION:THREADS``, runtime ``ort``, ``openvino``, ``executorch`` or ``ncnn``; precision
``best`` builds fp32 and int8 and keeps the one whose median predicted latency over 2,000 random
archs is lower), runs one search (the default sampler, ``--trials``) with accuracy and every
device's latency as objectives and a budget per device, then reports each device's own front and
its winner (the most accurate arch within that device's budget) at several budget levels: at
level q each device's budget is the q-quantile of its own predicted latencies over 2,000 random
archs, so every device is asked for "equally fast" models on its own scale. The search's budgets
are the loosest level. How often the runtime changes the best arch: per level, how many distinct
winners the devices have, and per pair of devices, at how many levels their winners differ.
A runtime that is not installed is skipped with the line that installs it.

With one resolution (``--resolutions 28``) the tables are those of ``bench/lut_accuracy.py``
(``runs/bench_lut``, the same files: one build serves both benches). Results go to
``bench/results/multi_device_<devices>.{json,md,png}``.

    python bench/multi_device.py --resolutions 28                 # the four runtimes, fp32 (OpenVINO: best)
    python bench/multi_device.py --devices ort:fp32:1,ort:int8:1   # fp32 vs int8 of ONNX Runtime
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from _setup import LUT_FP32, add_supernet_args, device_tag, md_code, quiet_optuna, supernet_bench
from scipy.stats import kendalltau

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LatencyTable, Predictor, build_table, make_backend, validate_table
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, device_front, pareto_rows, run_search
from edgenas.search_spaces import get_space

RUNTIMES = {"ort": "local-cpu", "openvino": "openvino:CPU", "executorch": "executorch", "ncnn": "ncnn"}
NAMES = {"ort": "onnxruntime"}  # the name a device goes by in the results
LUT_DIR = Path("runs/bench_lut")  # where bench/lut_accuracy.py keeps its one-resolution tables
# tables other benches build of the two-resolution bench space on this CPU, reused where a device matches
KNOWN = {("ort", "fp32", 1): LUT_FP32, ("ort", "int8", 1): "runs/bench_deployed/lut_int8.json"}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def device_table(space, work: Path, runtime: str, precision: str, threads: int) -> Path:
    """The validated table of one device, built where missing.

    One resolution: bench/lut_accuracy.py's table of `small` at it (its path and build, so either bench
    reuses the other's); several: a table of the bench space itself."""
    device = RUNTIMES[runtime]
    backend = make_backend(device, threads=threads)
    if len(space.resolutions) == 1:
        res = space.resolutions[0]
        path = LUT_DIR / f"small_r{res}_{precision}_t{threads}{device_tag(device)}.json"
        build_table(get_space("small"), backend, path, device=device, precision=precision, resolutions=[res])
    else:
        res = None
        path = Path(KNOWN.get((runtime, precision, threads), work / f"lut_{runtime}_{precision}_{threads}t.json"))
        build_table(space, backend, path, device=device, precision=precision, progress=False)
    if LatencyTable.load(path).validation is None:
        validate_table(path, backend, n=40, resolutions=[res] if res else None, progress=False)
    return path


def figure(rows: list[dict], fronts: dict, level: dict, names: list[str]):
    """Accuracy vs latency on each device: trials, each device's front, every device's winner at one budget level."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"on {n}" for n in names])
    colors = dict(zip(names, COLORS))
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
            ),
            row=1,
            col=col,
        )
        for m in names:
            win = level["winners"][m]
            if win is None:
                continue
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


def device_tables(space, work: Path, specs: list[str], sample: list) -> tuple[dict, dict, list[str]]:
    """name -> table path per device present, the precision each `best` picked, and the devices skipped (why)."""
    tables, picked, skipped = {}, {}, []
    for spec in specs:
        runtime, precision, threads = spec.split(":")
        if runtime not in RUNTIMES:
            raise SystemExit(f"unknown runtime {runtime!r} in {spec!r}; allowed: {', '.join(RUNTIMES)}")
        options = ("fp32", "int8") if precision == "best" else (precision,)
        try:
            paths = {p: device_table(space, work, runtime, p, int(threads)) for p in options}
        except RuntimeError as e:  # the runtime is not installed here: its install line
            skipped.append(f"{spec}: {e}")
            continue
        predictors = {p: Predictor(LatencyTable.load(path), space) for p, path in paths.items()}
        medians = {p: float(np.median([pr.predict(a) for a in sample])) for p, pr in predictors.items()}
        precision = min(medians, key=medians.get)
        picked[spec] = {"medians_ms": medians, "picked": precision}
        tables[f"{NAMES.get(runtime, runtime)}-{precision}-{threads}t"] = paths[precision]
    return tables, picked, skipped


def winners_at(levels: list[dict], fronts: dict, names: list[str]) -> None:
    """Each level's winner per device (the most accurate arch of its front within its budget), and how many differ."""
    for level in levels:
        level["winners"] = {}
        for k in names:
            ok = [r for r in fronts[k] if r[f"latency_ms:{k}"] <= level["budgets_ms"][k]]
            level["winners"][k] = ok[-1] if ok else None
        archs = {(w or {}).get("arch") for w in level["winners"].values()}
        level["distinct_winners"] = len(archs - {None})
        level["winners_differ"] = None not in archs and len(archs) > 1


def pair_summary(levels: list[dict], names: list[str], predicted: dict) -> list[dict]:
    """Per pair of devices: Kendall tau of their predictions, and at how many levels their winners differ."""
    out = []
    for a, b in itertools.combinations(names, 2):
        both = [lv for lv in levels if lv["winners"][a] and lv["winners"][b]]
        differ = [lv["quantile"] for lv in both if lv["winners"][a]["arch"] != lv["winners"][b]["arch"]]
        out.append(
            {
                "devices": [a, b],
                "kendall_tau": float(kendalltau(predicted[a], predicted[b])[0]),
                "levels": len(both),
                "winners_differ_at": differ,
            }
        )
    return out


def why_lines(level: dict, names: list[str]) -> list[str]:
    """At a level where the winners differ: each winner seen from every other device (over its budget, or
    within it and how much less accurate than that device's own winner)."""
    lines = []
    for k in names:
        w, notes = level["winners"][k], []
        for other in names:
            if other == k or level["winners"][other] is None or level["winners"][other]["arch"] == w["arch"]:
                continue
            ms, budget = w[f"latency_ms:{other}"], level["budgets_ms"][other]
            gain = level["winners"][other]["accuracy"] - w["accuracy"]
            notes.append(
                f"{ms:.3f} ms on {other} (over its {budget:.3f} ms budget)"
                if ms > budget
                else f"{ms:.3f} ms on {other} (within budget; {other}'s own winner {gain:+.4f} acc)"
            )
        if notes:
            lines.append(f"  - {k}'s winner: " + "; ".join(notes))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=120)
    p.add_argument(
        "--devices",
        default="ort:fp32:1,openvino:best:1,executorch:fp32:1,ncnn:fp32:1",
        help="comma-separated RUNTIME:PRECISION:THREADS (runtime ort, openvino, executorch or ncnn; "
        "precision fp32, int8 or best)",
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
    tables, picked, skipped = device_tables(space, work, args.devices.split(","), sample)
    for line in skipped:
        print(f"skipped {line}", flush=True)
    if len(tables) < 2:
        raise SystemExit(f"fewer than two devices present ({', '.join(tables) or 'none'}): nothing to compare")
    names = list(tables)
    loaded = {k: LatencyTable.load(v) for k, v in tables.items()}
    predictors = {k: Predictor(t, space) for k, t in loaded.items()}
    predicted = {k: np.array([pr.predict(a) for a in sample]) for k, pr in predictors.items()}
    quantiles = sorted(float(q) for q in args.quantiles.split(","))
    levels = [
        {"quantile": q, "budgets_ms": {k: float(np.quantile(v, q)) for k, v in predicted.items()}} for q in quantiles
    ]

    evaluator = SubnetEvaluator(supernet, splits, seed=0)  # the search's default evaluation
    # the search's budgets: the loosest level (a trial is feasible when it meets any device's)
    devices = [DeviceObjective(k, predictors[k], levels[-1]["budgets_ms"][k]) for k in tables]
    storage = f"sqlite:///{(work / 'studies.db').resolve()}"
    res = "-".join(str(r) for r in space.resolutions)
    tag = f"{'-'.join(names)}-r{res}-q{quantiles[-1]:g}-n{args.trials}"
    config = SearchConfig(n_trials=args.trials, storage=storage, study_name=f"per-device-{tag}")
    study = run_search(space, evaluator, devices, config, work / f"search_per_device_{tag}", progress=False)
    rows, _ = pareto_rows(study)
    fronts = {k: device_front(rows, k) for k in names}
    winners_at(levels, fronts, names)
    pairs = pair_summary(levels, names, predicted)
    result = {
        "devices": args.devices,
        "resolutions": list(space.resolutions),
        "skipped": skipped,
        "trials": len(rows),
        "precision": picked,
        "cpu": loaded[names[0]].header["cpu"],
        "runtimes": {k: t.header["runtime"] for k, t in loaded.items()},
        "tables": {k: str(v) for k, v in tables.items()},
        "table_validation": {k: t.validation["heldout"] for k, t in loaded.items()},
        "pairs": pairs,
        "fronts": fronts,
        "levels": levels,
        "winners_differ_levels": [lv["quantile"] for lv in levels if lv["winners_differ"]],
    }
    md = report(result, names, args)
    out = Path(args.out)
    stem = f"multi_device_{'_'.join(names)}" + (f"_r{res}" if len(space.resolutions) == 1 else "")
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")

    def gap(lv: dict) -> float:  # how far apart the winners' accuracies are
        accs = [w["accuracy"] for w in lv["winners"].values() if w]
        return max(accs) - min(accs)

    differ = [lv for lv in levels if lv["winners_differ"]]
    shown = max(differ, key=gap) if differ else levels[len(levels) // 2]  # the plot: the widest difference
    figure(rows, fronts, shown, names).write_image(str(out / f"{stem}.png"), width=450 * len(names), height=480)
    print("\n".join(md))


def report(result: dict, names: list[str], args: argparse.Namespace) -> list[str]:
    """The Markdown: the tables, the winners per level, how often the runtime changes the best arch and why."""
    levels, pairs = result["levels"], result["pairs"]
    intro = [
        f"{k}: {result['runtimes'][k]}, held-out within ±10 % "
        f"{result['table_validation'][k]['within_10pct']:.0%}, Kendall τ "
        f"{result['table_validation'][k]['kendall_tau']:.3f}"
        for k in names
    ]
    for spec, v in result["precision"].items():
        if len(v["medians_ms"]) > 1:
            medians = ", ".join(f"{p} {m:.3f} ms" for p, m in v["medians_ms"].items())
            intro.append(f"precision `best` for {spec}: median predicted latency {medians} -> {v['picked']}")
    md = [
        f"`python bench/multi_device.py --devices {args.devices} --resolutions {args.resolutions}` on "
        f"{result['cpu']}: " + "; ".join(intro) + ".",
        "",
    ]
    md += [f"Skipped {line}." for line in result["skipped"]]
    md += [
        f"{result['trials']} trials. Front sizes (all trials within the loosest budget): "
        f"{', '.join(f'{k} {len(f)}' for k, f in result['fronts'].items())}.",
        "",
        "| budget level | "
        + " | ".join(f"{k} budget (ms) | {k} winner | val acc" for k in names)
        + " | distinct winners |",
        "|---|" + "---|---|---|" * len(names) + "---|",
    ]
    for lv in levels:
        cells = []
        for k in names:
            w = lv["winners"][k]
            cells += [f"{lv['budgets_ms'][k]:.3f}", md_code(w["arch"]) if w else "none"]
            cells.append(f"{w['accuracy']:.4f}" if w else "")
        md.append(f"| q = {lv['quantile']:g} | " + " | ".join(cells) + f" | {lv['distinct_winners']} |")
    differ = [lv for lv in levels if lv["winners_differ"]]
    md += [
        "",
        f"The runtime changes the best arch at {len(differ)} of {len(levels)} budget levels. Per pair of devices:",
        "",
        "| devices | Kendall τ of their predictions (2,000 random archs) | levels where the winners differ |",
        "|---|---|---|",
    ]
    for pr in pairs:
        a, b = pr["devices"]
        at = ", ".join(f"{q:g}" for q in pr["winners_differ_at"]) or "none"
        md.append(f"| {a} / {b} | {pr['kendall_tau']:.3f} | {len(pr['winners_differ_at'])} of {pr['levels']} ({at}) |")
    if differ:
        md += ["", "Where they differ, each winner seen from the other devices:"]
    for lv in differ:
        md.append(f"- q = {lv['quantile']:g}:")
        md += why_lines(lv, names)
    return md


if __name__ == "__main__":
    main()
