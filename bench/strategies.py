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
deviation over seeds, and ratios to random. Results: bench/results/strategies.{json,md}.

    python bench/strategies.py                     # 4 strategies x 5 seeds x 100 trials
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import optuna
from _setup import LUT_FP32, add_supernet_args, bench_predictor, supernet_bench  # noqa: I001 (bench/ is the script's folder)

from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, run_search
from edgenas.reports import hypervolume

STRATEGIES = ("nsga2", "tpe", "random", "guided")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def front_hypervolume(points: list[tuple[float, float]], lat_ref: float) -> float:
    return hypervolume([[1.0 - acc, ms / lat_ref] for acc, ms in points])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--share", type=float, default=0.5, help="budget: this share of the largest's predicted latency")
    p.add_argument("--lut", default=LUT_FP32, help="built and validated here if missing")
    p.add_argument("--calib-batches", type=int, default=8, help="BN recalibration batches per evaluation")
    p.add_argument("--val-images", type=int, default=None, help="validation images per evaluation (default: all)")
    add_supernet_args(p, workdir="runs/bench_strategies")
    args = p.parse_args()

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

    runs = {}
    for seed in range(args.seeds):
        for strategy in STRATEGIES:
            name = f"{strategy}-seed{seed}"
            config = SearchConfig(sampler=strategy, n_trials=args.trials, seed=seed,
                                  storage=f"sqlite:///{(work / 'studies.db').resolve()}", study_name=name)  # fmt: skip
            started, evaluated_before = time.time(), sum(v[1] for v in cache.values())
            study = run_search(space, evaluate, [device], config, work / name, progress=False)
            own = time.time() - started - (sum(v[1] for v in cache.values()) - evaluated_before)
            trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
            runs[name] = {"strategy": strategy, "seed": seed, "strategy_seconds": own / max(1, len(trials)),
                          "points": [(t.values[0], t.user_attrs["latency_ms:cpu-fp32"]) for t in trials]}  # fmt: skip
            log(f"{name}: HV {front_hypervolume([q for q in runs[name]['points'] if q[1] <= budget], lat_ref):.4f}")

    eval_cost = float(np.mean([v[1] for v in cache.values()]))
    for r in runs.values():  # the time a lone search would have spent after each trial
        r["elapsed"] = list(np.cumsum([eval_cost + r["strategy_seconds"]] * len(r["points"])))
    horizon = min(r["elapsed"][-1] for r in runs.values())  # equal time: what every run reached

    def hv_until(r: dict, trials: int | None = None, seconds: float | None = None) -> float:
        n = trials if trials is not None else int(np.searchsorted(r["elapsed"], seconds, side="right"))
        return front_hypervolume([q for q in r["points"][:n] if q[1] <= budget], lat_ref)

    table = {}
    for strategy in STRATEGIES:
        mine = [r for r in runs.values() if r["strategy"] == strategy]
        at_trials = [hv_until(r, trials=args.trials) for r in mine]
        at_time = [hv_until(r, seconds=horizon) for r in mine]
        curve = [float(np.mean([hv_until(r, trials=k) for r in mine])) for k in range(10, args.trials + 1, 10)]
        table[strategy] = {"hv_trials_mean": float(np.mean(at_trials)), "hv_trials_std": float(np.std(at_trials)),
                           "hv_time_mean": float(np.mean(at_time)), "hv_time_std": float(np.std(at_time)),
                           "seconds_per_trial": float(np.mean([r["strategy_seconds"] for r in mine])) + eval_cost,
                           "curve_every_10_trials": curve}  # fmt: skip
    for s in table.values():
        s["vs_random_trials"] = s["hv_trials_mean"] / table["random"]["hv_trials_mean"]
        s["vs_random_time"] = s["hv_time_mean"] / table["random"]["hv_time_mean"]
    results = {"settings": vars(args), "budget_ms": budget, "eval_seconds": eval_cost, "equal_time_seconds": horizon,
               "table": table, "runs": runs}  # fmt: skip
    atomic_write_json(out / "strategies.json", results)
    md = [f"# Search strategies ({args.seeds} seeds x {args.trials} trials, budget {budget:.3f} ms)", "",
          f"`python bench/strategies.py --trials {args.trials} --seeds {args.seeds}`: the full-Fashion-MNIST supernet, "
          f"evaluation {eval_cost:.2f} s per arch charged to every trial; equal time = {horizon / 60:.1f} minutes "
          "(what every run reached).", "",
          "| strategy | HV at equal trials | vs random | HV at equal time | vs random | s per trial |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for k, s in table.items():
        md.append(f"| {k} | {s['hv_trials_mean']:.4f} ± {s['hv_trials_std']:.4f} | {s['vs_random_trials']:.3f}x | "
                  f"{s['hv_time_mean']:.4f} ± {s['hv_time_std']:.4f} | {s['vs_random_time']:.3f}x | "
                  f"{s['seconds_per_trial']:.2f} |")  # fmt: skip
    atomic_write_text(out / "strategies.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
