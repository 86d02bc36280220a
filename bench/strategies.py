"""Search strategies compared on the full-Fashion-MNIST supernet: hypervolume at equal trials and equal time.

Each strategy (NSGA-II, TPE, random, predictor-guided) searches the bench space with the
supernet of ``bench/supernet.py`` and an fp32 table of this CPU, under a latency budget of
``--share`` x the largest subnet's predicted latency, for ``--trials`` trials and each of
``--seeds`` seeds. An arch's validation accuracy is evaluated once and shared by all runs
(kept in ``--workdir``, so the bench resumes); every trial is charged the measured mean
evaluation time whether or not its arch was cached, plus the time the strategy itself took
(sampling, fitting its predictor), so "equal time" compares what a lone search would
spend. Hypervolume of (1 - val accuracy, predicted latency / reference) over the trials
within the budget, reference point (1, 1.05 x the largest's latency); mean and standard
deviation over seeds, and ratios to random. Apart from that, each strategy runs ``--rate-trials``
trials with a fresh evaluator (nothing cached), timed by the wall clock: the trial rate a
user sees. Results: bench/results/strategies.{json,md,png}.

    python bench/strategies.py                     # 4 strategies x 5 seeds x 100 trials
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import optuna
from _setup import LUT_FP32, add_supernet_args, bench_predictor, log, quiet_optuna, supernet_bench
from scipy.stats import ttest_ind

from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend
from edgenas.metrics import hypervolume
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, run_search

STRATEGIES = ("nsga2", "tpe", "random", "guided")


def front_hypervolume(points: list[tuple[float, float]], lat_ref: float, acc_ref: float = 0.0) -> float:
    """Hypervolume of (error, latency), normalised so the reference point (``acc_ref``, ``lat_ref``) is (1, 1)."""
    return hypervolume([[(1.0 - acc) / (1.0 - acc_ref), ms / lat_ref] for acc, ms in points])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--share", type=float, default=0.5, help="budget: this share of the largest's predicted latency")
    p.add_argument("--lut", default=LUT_FP32, help="built and validated here if missing")
    p.add_argument("--calib-batches", type=int, default=8, help="BN recalibration batches per evaluation")
    p.add_argument("--val-images", type=int, default=None, help="validation images per evaluation (default: all)")
    p.add_argument("--rate-trials", type=int, default=60, help="trials of the wall-clock trial-rate run per strategy")
    add_supernet_args(p, workdir="runs/bench_strategies")
    args = p.parse_args()
    quiet_optuna()

    work, out = Path(args.workdir), Path(args.out)
    space, splits, supernet = supernet_bench(args)
    predictor = bench_predictor(space, Path(args.lut), LocalBackend(threads=1))
    largest_ms = predictor.predict(space.largest())
    budget, lat_ref = args.share * largest_ms, 1.05 * largest_ms
    device = DeviceObjective("cpu-fp32", predictor, budget)
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=args.calib_batches, images=args.val_images, seed=0)

    # arch -> (val accuracy, evaluation seconds), shared by every run of these evaluation settings
    cache_path = work / f"accuracy_c{args.calib_batches}_v{args.val_images or 'all'}.json"
    cache: dict[str, list[float]] = read_json(cache_path) if cache_path.exists() else {}

    def evaluate(arch) -> float:
        key = str(arch)
        if key not in cache:
            t0 = time.time()
            cache[key] = [evaluator(arch), time.time() - t0]
            atomic_write_json(cache_path, cache)
        return cache[key][0]

    # per run: its strategy's own seconds per trial and its (accuracy, latency) points, kept so a
    # re-run (or a resumed one) charges the time the strategy took when it ran
    runs_path = work / f"runs_c{args.calib_batches}_v{args.val_images or 'all'}.json"
    runs: dict = read_json(runs_path) if runs_path.exists() else {}
    for seed in range(args.seeds):
        for strategy in STRATEGIES:
            name = f"{strategy}-seed{seed}"
            if name in runs and len(runs[name]["points"]) >= args.trials:
                continue
            config = SearchConfig(
                sampler=strategy,
                n_trials=args.trials,
                seed=seed,
                calib_batches=args.calib_batches,
                val_images=args.val_images,
                storage=f"sqlite:///{(work / 'studies.db').resolve()}",
                study_name=name,
            )
            started, evaluated_before = time.time(), sum(v[1] for v in cache.values())
            study = run_search(space, evaluate, [device], config, work / name, progress=False)
            own = time.time() - started - (sum(v[1] for v in cache.values()) - evaluated_before)
            trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
            runs[name] = {
                "strategy": strategy,
                "seed": seed,
                "strategy_seconds": own / max(1, len(trials)),
                "points": [(t.values[0], t.user_attrs["latency_ms:cpu-fp32"]) for t in trials],
            }
            atomic_write_json(runs_path, runs)
            log(f"{name}: HV {front_hypervolume([q for q in runs[name]['points'] if q[1] <= budget], lat_ref):.4f}")

    # the trial rate a user sees: a fresh evaluator (nothing cached), wall clock, one run per strategy
    rates_path = work / f"rates_c{args.calib_batches}_v{args.val_images or 'all'}_n{args.rate_trials}.json"
    rates: dict = read_json(rates_path) if rates_path.exists() else {}
    for strategy in STRATEGIES:
        if strategy not in rates:
            fresh = SubnetEvaluator(supernet, splits, calib_batches=args.calib_batches, images=args.val_images, seed=0)
            storage = f"sqlite:///{(work / 'rates.db').resolve()}"  # a new study each time: its rate is measured anew
            config = SearchConfig(
                sampler=strategy,
                n_trials=args.rate_trials,
                seed=99,
                storage=storage,
                study_name=f"rate-{strategy}-{time.time():.0f}",
            )
            started = time.time()
            run_search(space, fresh, [device], config, work / "rates", progress=False)
            rates[strategy] = args.rate_trials / ((time.time() - started) / 60)
            atomic_write_json(rates_path, rates)
            log(f"{strategy}: {rates[strategy]:.1f} trials per minute")

    eval_cost = float(np.mean([v[1] for v in cache.values()]))
    for r in runs.values():  # the time a lone search would have spent after each trial
        r["elapsed"] = list(np.cumsum([eval_cost + r["strategy_seconds"]] * len(r["points"])))
    horizon = min(r["elapsed"][-1] for r in runs.values())  # equal time: what every run reached

    # reference accuracy: the worst any run found within the budget (the nadir of all trials), so
    # the hypervolume measures the band where the strategies differ; the one from 0 % is also given
    nadir = min(acc for r in runs.values() for acc, ms in r["points"] if ms <= budget)

    def hv_until(r: dict, trials: int | None = None, seconds: float | None = None, acc_ref: float = nadir) -> float:
        n = trials if trials is not None else int(np.searchsorted(r["elapsed"], seconds, side="right"))
        return front_hypervolume([q for q in r["points"][:n] if q[1] <= budget], lat_ref, acc_ref)

    def summary(acc_ref: float) -> dict:
        table = {}
        for strategy in STRATEGIES:
            mine = [r for r in runs.values() if r["strategy"] == strategy]
            at_trials = [hv_until(r, trials=args.trials, acc_ref=acc_ref) for r in mine]
            at_time = [hv_until(r, seconds=horizon, acc_ref=acc_ref) for r in mine]
            table[strategy] = {
                "trials_per_minute": rates[strategy],
                "hv_trials_mean": float(np.mean(at_trials)),
                "hv_trials_std": float(np.std(at_trials)),
                "hv_time_mean": float(np.mean(at_time)),
                "hv_time_std": float(np.std(at_time)),
                "hv_time_per_seed": at_time,
                "seconds_per_trial": eval_cost + float(np.mean([r["strategy_seconds"] for r in mine])),
            }
        for strategy, s in table.items():
            s["vs_random_trials"] = s["hv_trials_mean"] / table["random"]["hv_trials_mean"]
            s["vs_random_time"] = s["hv_time_mean"] / table["random"]["hv_time_mean"]
            # more than the seeds' spread? Welch's t-test of the per-seed values against random's
            p_value = ttest_ind(s["hv_time_per_seed"], table["random"]["hv_time_per_seed"], equal_var=False).pvalue
            s["p_vs_random_time"] = float(p_value) if strategy != "random" else None
        return table

    table, table_from_zero = summary(nadir), summary(0.0)
    default = SearchConfig().sampler
    gain = table[default]["vs_random_time"] - 1
    results = {
        "settings": vars(args),
        "budget_ms": budget,
        "eval_seconds": eval_cost,
        "equal_time_seconds": horizon,
        "reference_accuracy": nadir,
        "default": default,
        "table": table,
        "table_reference_accuracy_0": table_from_zero,
        "runs": runs,
    }
    atomic_write_json(out / "strategies.json", results)
    figure(runs, hv_until, args.trials, horizon).write_image(str(out / "strategies.png"), width=1100, height=450)
    command = (
        f"python bench/strategies.py --trials {args.trials} --seeds {args.seeds} --calib-batches "
        f"{args.calib_batches}" + (f" --val-images {args.val_images}" if args.val_images else "")
    )
    md = [
        f"# Search strategies ({args.seeds} seeds x {args.trials} trials, budget {budget:.3f} ms)",
        "",
        f"`{command}`: the full-Fashion-MNIST supernet, evaluation ({args.calib_batches} BN batches, "
        f"{args.val_images or 'all'} validation images) {eval_cost:.2f} s per arch, charged to every trial; equal "
        f"time = {horizon / 60:.1f} minutes (what every run reached). Hypervolume of (validation error, latency) "
        f"over the trials within the budget, reference point ({nadir * 100:.2f} % accuracy: the worst any run found "
        f"within the budget; 1.05 x the largest arch's latency), normalised to 1. p: Welch's t-test against random "
        "over the seeds, at equal time.",
        "",
        f"**Target (the default strategy, `{default}`, >= 3 % above random at equal time): "
        f"{'met' if gain >= 0.03 else 'not met'} ({gain * 100:+.1f} %, "
        f"p = {table[default]['p_vs_random_time']:.3f}).**",
        "",
        "| strategy | HV at equal trials | vs random | HV at equal time | vs random | p | charged s per trial "
        "| trials per minute (fresh run, wall clock) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, s in table.items():
        p_value = "-" if s["p_vs_random_time"] is None else f"{s['p_vs_random_time']:.3f}"
        md.append(
            f"| {k} | {s['hv_trials_mean']:.4f} ± {s['hv_trials_std']:.4f} | {s['vs_random_trials']:.3f}x | "
            f"{s['hv_time_mean']:.4f} ± {s['hv_time_std']:.4f} | {s['vs_random_time']:.3f}x | {p_value} | "
            f"{s['seconds_per_trial']:.2f} | {s['trials_per_minute']:.1f} |"
        )
    md += [
        "",
        "With the reference point at 0 % accuracy (the whole error axis; differences shrink accordingly), at "
        "equal time: " + ", ".join(f"{k} {s['vs_random_time']:.3f}x" for k, s in table_from_zero.items()) + ".",
        "",
        "![hypervolume against trials and time](strategies.png)",
    ]
    atomic_write_text(out / "strategies.md", "\n".join(md) + "\n")
    print("\n".join(md))


def figure(runs: dict, hv_until, trials: int, horizon: float):
    """Mean hypervolume (band: +- one std over seeds) against trials and against charged minutes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("against trials", "against charged time"))
    colors = {"nsga2": "#1f77b4", "tpe": "#ff7f0e", "random": "#7f7f7f", "guided": "#2ca02c"}
    for strategy in STRATEGIES:
        mine = [r for r in runs.values() if r["strategy"] == strategy]
        axes = ((1, list(range(1, trials + 1)), "trials"), (2, list(np.linspace(0, horizon, 60)), "seconds"))
        for col, xs, kw in axes:
            hv = np.array([[hv_until(r, **{kw: x}) for x in xs] for r in mine])
            x = xs if col == 1 else [v / 60 for v in xs]
            mean, std = hv.mean(0), hv.std(0)
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=list(mean + std) + list((mean - std)[::-1]),
                    fill="toself",
                    line={"width": 0},
                    fillcolor=colors[strategy],
                    opacity=0.15,
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(x=x, y=mean, name=strategy, line={"color": colors[strategy]}, showlegend=col == 1),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="complete trials", row=1, col=1)
    fig.update_xaxes(title_text="charged minutes", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume (mean over seeds)", row=1, col=1)
    fig.update_layout(template="plotly_white", title="Search strategies on the full-Fashion-MNIST supernet")
    return fig


if __name__ == "__main__":
    main()
