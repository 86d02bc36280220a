"""One search, two devices: fp32 and int8 ONNX Runtime on this CPU as two latency tables.

Reuses the supernet and fp32 table of ``bench/search.py`` (same ``--workdir``), builds and
validates the int8 table, runs one NSGA-II search with accuracy and both latencies as
objectives and a budget per device, then reports each device's own front and its winner
(the most accurate arch within that device's budget). Results go to
``bench/results/multi_device.{json,md}``.

    python bench/multi_device.py
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from edgenas.data import load_dataset, make_splits
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import LatencyTable, LocalBackend, Predictor, build_table, validate_table
from edgenas.nas import (
    DeviceObjective,
    SearchConfig,
    SubnetEvaluator,
    load_supernet,
    pareto_rows,
    run_search,
    set_threads,
)
from edgenas.search_spaces import get_space


def front_2d(rows: list[dict], key: str) -> list[dict]:
    ordered = sorted(rows, key=lambda r: (r[key], -r["accuracy"]))
    front, best = [], -1.0
    for r in ordered:
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    return front


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/bench_search")
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--resolutions", default="24,28")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quantile", type=float, default=0.25,
                   help="each device's budget: this quantile of its predicted latencies over 2,000 random archs")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work = Path(args.workdir)
    set_threads(args.threads)
    space = dataclasses.replace(get_space("small"), resolutions=tuple(int(r) for r in args.resolutions.split(",")))
    splits = make_splits(load_dataset("fashion-mnist"), val_fraction=0.05, train_limit=args.train_limit, seed=0)
    backend = LocalBackend(threads=1)
    int8 = work / "lut_small_int8.json"
    build_table(space, backend, int8, precision="int8", progress=False)
    if LatencyTable.load(int8).validation is None:
        validate_table(int8, backend, n=40, progress=False)
    tables = {"cpu-fp32": work / "lut_small_fp32.json", "cpu-int8": int8}
    predictors = {k: Predictor(LatencyTable.load(v), space) for k, v in tables.items()}
    rng = np.random.default_rng(0)
    sample = [space.sample(rng) for _ in range(2000)]
    budgets = {k: float(np.quantile([pr.predict(a) for a in sample], args.quantile)) for k, pr in predictors.items()}
    tau = kendalltau([predictors["cpu-fp32"].predict(a) for a in sample],
                     [predictors["cpu-int8"].predict(a) for a in sample])[0]  # fmt: skip

    supernet = load_supernet(space, work / "supernet.pt")
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=8)
    devices = [DeviceObjective(k, predictors[k], budgets[k]) for k in tables]
    storage = f"sqlite:///{(work / 'studies.db').resolve()}"
    config = SearchConfig(sampler="nsga2", n_trials=args.trials, population_size=12, storage=storage,
                          study_name=f"multi-device-q{args.quantile:g}")  # fmt: skip
    study = run_search(space, evaluator, devices, config, work / f"search_multi_device_q{args.quantile:g}",
                       progress=False)
    rows, _ = pareto_rows(study)
    result = {"budget_quantile": args.quantile, "budgets_ms": budgets,
              "kendall_tau_fp32_vs_int8_over_2000_random_archs": tau,
              "table_validation": {k: LatencyTable.load(v).validation["heldout"] for k, v in tables.items()},
              "trials": len(rows), "devices": {}}  # fmt: skip
    md = [f"Budgets ({args.quantile:.0%} quantile of the predicted latency of 2,000 random archs): "
          f"{', '.join(f'{k} {v:.3f} ms' for k, v in budgets.items())}. Kendall tau between the two tables' "
          f"predictions over those archs: {tau:.3f}.", ""]  # fmt: skip
    md += ["| device | front size | winner (most accurate within budget) | val accuracy | fp32 ms | int8 ms |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for k in tables:
        key = f"latency_ms:{k}"
        front = front_2d(rows, key)
        within = [r for r in rows if r[key] <= budgets[k]]
        winner = max(within, key=lambda r: (r["accuracy"], -r[key])) if within else None
        result["devices"][k] = {"front": front, "winner": winner}
        if winner:
            md.append(f"| {k} | {len(front)} | `{winner['arch']}` | {winner['accuracy']:.4f} | "
                      f"{winner['latency_ms:cpu-fp32']:.3f} | {winner['latency_ms:cpu-int8']:.3f} |")  # fmt: skip
    w = {k: (v["winner"] or {}).get("arch") for k, v in result["devices"].items()}
    result["winners_differ"] = len(set(w.values())) > 1
    md += ["", f"Winners differ: {'yes' if result['winners_differ'] else 'no'}."]
    out = Path(args.out)
    atomic_write_json(out / "multi_device.json", result)
    atomic_write_text(out / "multi_device.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
