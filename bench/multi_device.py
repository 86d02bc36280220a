"""One search, two devices: e.g. fp32 and int8 (or 1 and 2 threads) of ONNX Runtime on this CPU.

Reuses the supernet and fp32 table of ``bench/search.py`` (same ``--workdir``), builds and
validates the int8 table, runs one NSGA-II search with accuracy and both latencies as
objectives and a budget per device, then reports each device's own front and its winner
(the most accurate arch within that device's budget). Results go to
``bench/results/multi_device.{json,md}``.

    python bench/multi_device.py                        # fp32 vs int8, 1 thread
    python bench/multi_device.py --devices fp32:1,fp32:2 # 1 vs 2 threads
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _setup import bench_space, bench_splits  # noqa: I001 (bench/ is the script's folder)
from scipy.stats import kendalltau

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
    p.add_argument("--devices", default="fp32:1,int8:1",
                   help="the two devices as precision:threads of ONNX Runtime on this CPU")
    p.add_argument("--quantile", type=float, default=0.25,
                   help="each device's budget: this quantile of its predicted latencies over 2,000 random archs")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work = Path(args.workdir)
    set_threads(args.threads)
    space = bench_space(args.resolutions)
    splits = bench_splits(args.train_limit)
    tables = {}
    for spec in args.devices.split(","):
        precision, threads = spec.split(":")
        name = f"cpu-{precision}-{threads}t"
        backend = LocalBackend(threads=int(threads))
        path = work / ("lut_small_fp32.json" if spec == "fp32:1" else f"lut_small_{precision}_{threads}t.json")
        if spec == "int8:1" and (work / "lut_small_int8.json").exists():
            path = work / "lut_small_int8.json"
        build_table(space, backend, path, precision=precision, progress=False)
        if LatencyTable.load(path).validation is None:
            validate_table(path, backend, n=40, progress=False)
        tables[name] = path
    names = list(tables)
    predictors = {k: Predictor(LatencyTable.load(v), space) for k, v in tables.items()}
    rng = np.random.default_rng(0)
    sample = [space.sample(rng) for _ in range(2000)]
    budgets = {k: float(np.quantile([pr.predict(a) for a in sample], args.quantile)) for k, pr in predictors.items()}
    tau = kendalltau([predictors[names[0]].predict(a) for a in sample],
                     [predictors[names[1]].predict(a) for a in sample])[0]  # fmt: skip

    supernet = load_supernet(space, work / "supernet.pt")
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=8)
    devices = [DeviceObjective(k, predictors[k], budgets[k]) for k in tables]
    storage = f"sqlite:///{(work / 'studies.db').resolve()}"
    config = SearchConfig(sampler="nsga2", n_trials=args.trials, population_size=12, storage=storage,
                          study_name=f"multi-device-{'-'.join(names)}-q{args.quantile:g}")  # fmt: skip
    out_dir = work / f"search_multi_device_{'_'.join(names)}_q{args.quantile:g}"
    study = run_search(space, evaluator, devices, config, out_dir, progress=False)
    rows, _ = pareto_rows(study)
    result = {"budget_quantile": args.quantile, "budgets_ms": budgets,
              "kendall_tau_between_tables_over_2000_random_archs": tau,
              "table_validation": {k: LatencyTable.load(v).validation["heldout"] for k, v in tables.items()},
              "trials": len(rows), "devices": {}}  # fmt: skip
    md = [f"Budgets ({args.quantile:.0%} quantile of the predicted latency of 2,000 random archs): "
          f"{', '.join(f'{k} {v:.3f} ms' for k, v in budgets.items())}. Kendall tau between the two tables' "
          f"predictions over those archs: {tau:.3f}.", ""]  # fmt: skip
    md += [f"| device | front size | winner (most accurate within budget) | val accuracy | {names[0]} ms | "
           f"{names[1]} ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for k in tables:
        key = f"latency_ms:{k}"
        front = front_2d(rows, key)
        within = [r for r in rows if r[key] <= budgets[k]]
        winner = max(within, key=lambda r: (r["accuracy"], -r[key])) if within else None
        result["devices"][k] = {"front": front, "winner": winner}
        if winner:
            md.append(f"| {k} | {len(front)} | `{winner['arch']}` | {winner['accuracy']:.4f} | "
                      f"{winner[f'latency_ms:{names[0]}']:.3f} | {winner[f'latency_ms:{names[1]}']:.3f} |")  # fmt: skip
    w = {k: (v["winner"] or {}).get("arch") for k, v in result["devices"].items()}
    result["winners_differ"] = len(set(w.values())) > 1
    md += ["", f"Winners differ: {'yes' if result['winners_differ'] else 'no'}."]
    out = Path(args.out)
    stem = "multi_device" if args.devices == "fp32:1,int8:1" else f"multi_device_{'_'.join(names)}"
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
