"""Search benchmark on Fashion-MNIST: samplers, ranking fidelity, searched vs MobileNetV3 at measured latency.

Steps (each resumable: tables, checkpoints, studies and trained models are kept in
``--workdir``):

1. fp32 latency table of the bench space on this CPU (1 thread), validated on 40 subnets;
2. supernet trained with the sandwich rule + in-place distillation (``--epochs`` on
   ``--train-limit`` images);
3. one search per sampler (NSGA-II, TPE, random) with ``--trials`` trials each; the
   hypervolume of (1 - val accuracy, predicted latency) per sampler, and search throughput;
4. the MobileNetV3 reference layouts and ``--picks`` archs from the NSGA-II front trained
   stand-alone with the same budget (``--epochs`` on the same images), test accuracy;
5. ranking fidelity: Kendall tau between supernet-inherited and stand-alone test accuracy
   over all archs of step 4;
6. every model of step 4 exported and timed end to end in one interleaved batch: searched
   vs reference at measured latency.

    python bench/search.py                      # the defaults of the README figures
    python bench/search.py --trials 20 --epochs 2 --train-limit 4000   # quicker
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _setup import bench_space, bench_splits, md_code
from optuna._hypervolume import compute_hypervolume
from scipy.stats import kendalltau

from edgenas.distill import FitConfig, fit
from edgenas.export import export_onnx
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import (
    LatencyTable,
    LocalBackend,
    Predictor,
    Protocol,
    build_table,
    reference_model,
    validate_table,
)
from edgenas.nas import (
    DeviceObjective,
    SearchConfig,
    SubnetEvaluator,
    accuracy,
    pareto_rows,
    run_search,
    set_threads,
    train_supernet,
)
from edgenas.nas._train import TrainConfig
from edgenas.search_spaces import Arch, build_subnet, reference_archs


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def hypervolume(rows: list[dict], lat_key: str, lat_ref: float) -> float:
    pts = np.array([[1.0 - r["accuracy"], r[lat_key] / lat_ref] for r in rows])
    pts = pts[(pts[:, 0] < 1.0) & (pts[:, 1] < 1.0)]
    return float(compute_hypervolume(pts, np.array([1.0, 1.0]))) if len(pts) else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=4, help="supernet epochs = stand-alone epochs")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--picks", type=int, default=4, help="archs taken from the NSGA-II front")
    p.add_argument("--resolutions", default="24,28")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/bench_search")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    space = bench_space(args.resolutions)
    splits = bench_splits(args.train_limit)
    log(f"data {splits.describe()}")
    results: dict = {"settings": vars(args), "data": splits.describe(), "space": space.to_dict()}

    # 1. latency table
    backend = LocalBackend(threads=1)
    lut = work / "lut_small_fp32.json"
    t0 = time.time()
    build_table(space, backend, lut, progress=False)
    table = LatencyTable.load(lut)
    if table.validation is None:
        validate_table(lut, backend, n=40, progress=False)
        table = LatencyTable.load(lut)
    results["lut"] = {
        "entries": len(table.entries),
        "seconds": time.time() - t0,
        "heldout": table.validation["heldout"],
    }
    log(f"lut {results['lut']}")
    predictor = Predictor(table, space)

    # 2. supernet
    t0 = time.time()
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, threads=args.threads, seed=args.seed)
    supernet, history = train_supernet(space, splits, cfg, work / "supernet.pt", progress=False)
    results["supernet"] = {"history": history, "seconds_this_run": time.time() - t0}
    log(f"supernet trained: {history[-1]}")

    # 3. searches
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=8, seed=args.seed)
    device = DeviceObjective("cpu-fp32", predictor)
    lat_key = "latency_ms:cpu-fp32"
    lat_ref = predictor.predict(space.largest()) * 1.05
    searches = {}
    for sampler in ("nsga2", "tpe", "random"):
        t0 = time.time()
        cached_before = len(evaluator.cache)
        sc = SearchConfig(
            sampler=sampler,
            n_trials=args.trials,
            storage=f"sqlite:///{(work / 'studies.db').resolve()}",
            study_name=f"{sampler}-seed{args.seed}",
            seed=args.seed,
            population_size=10,
        )
        study = run_search(space, evaluator, [device], sc, work / f"search_{sampler}", progress=False)
        rows, front = pareto_rows(study)
        searches[sampler] = {
            "trials": len(rows),
            "front": front,
            "hypervolume": hypervolume(rows, lat_key, lat_ref),
            "seconds": time.time() - t0,
            "new_evaluations": len(evaluator.cache) - cached_before,
        }
        log(
            f"{sampler}: HV {searches[sampler]['hypervolume']:.4f}, {len(front)} on front, "
            f"{searches[sampler]['seconds']:.0f}s"
        )
    hv_random = searches["random"]["hypervolume"]
    for s in searches.values():
        s["hypervolume_vs_random"] = s["hypervolume"] / hv_random if hv_random else float("nan")
    first = searches["nsga2"]
    results["search"] = searches
    # NSGA-II runs first, with an empty evaluation cache: its rate includes evaluating (almost) every trial
    results["throughput_trials_per_minute"] = first["trials"] / (first["seconds"] / 60)
    results["throughput_note"] = f"{first['new_evaluations']} of {first['trials']} trials evaluated anew"

    # 4. stand-alone training of references + front picks
    refs = {name: arch for name, arch in reference_archs(space).items()}
    front = sorted(first["front"], key=lambda r: r[lat_key])
    picks = [front[int(i)] for i in np.unique(np.round(np.linspace(0, len(front) - 1, args.picks)).astype(int))]
    models: dict[str, Arch] = {}
    for name, arch in refs.items():
        if str(arch) not in {str(a) for a in models.values()}:
            models[name] = arch
    for i, r in enumerate(picks):
        models[f"searched-{i + 1}"] = Arch.parse(r["arch"])
    standalone_path = work / "standalone.json"
    standalone = read_json(standalone_path) if standalone_path.exists() else {}
    test_eval = SubnetEvaluator(supernet, splits, split="test", calib_batches=8, seed=args.seed)
    for name, arch in models.items():
        key = str(arch)
        if key not in standalone:
            torch.manual_seed(args.seed)
            net = build_subnet(space, arch)
            t0 = time.time()
            fit(
                net,
                splits,
                FitConfig(epochs=args.epochs, batch_size=128, lr=0.05, seed=args.seed),
                resolution=arch.resolution,
                channels=space.in_chs,
                progress=False,
            )
            acc = accuracy(net, splits.test, splits, resolution=arch.resolution, channels=space.in_chs)
            export_onnx(net, net.input_shape, work / f"standalone_{name}.onnx")
            standalone[key] = {"name": name, "test_accuracy": acc, "train_seconds": time.time() - t0}
            atomic_write_json(standalone_path, standalone)
        standalone[key]["name"] = name
        standalone[key]["supernet_test_accuracy"] = test_eval(arch)
        standalone[key]["predicted_ms"] = predictor.predict(arch)
        log(
            f"{name} {key}: stand-alone {standalone[key]['test_accuracy']:.4f}, "
            f"supernet {standalone[key]['supernet_test_accuracy']:.4f}"
        )

    # 5. ranking fidelity
    keys = list(models.values())
    sa = [standalone[str(a)]["test_accuracy"] for a in keys]
    sn = [standalone[str(a)]["supernet_test_accuracy"] for a in keys]
    results["ranking_fidelity"] = {"n": len(keys), "kendall_tau": float(kendalltau(sa, sn)[0])}
    log(f"fidelity {results['ranking_fidelity']}")

    # 6. measured latency, all models in one interleaved batch
    onnx = [(work / f"standalone_{n}.onnx").read_bytes() for n in models]
    timings, ref, _ = backend.measure(onnx, reference_model("fp32"), Protocol(rounds=30))
    ref_ms = table.header["reference_ms"]
    rows = []
    for (name, arch), t in zip(models.items(), timings):
        s = standalone[str(arch)]
        rows.append(
            {
                "name": name,
                "arch": str(arch),
                "test_accuracy": s["test_accuracy"],
                "supernet_test_accuracy": s["supernet_test_accuracy"],
                "predicted_ms": s["predicted_ms"],
                "measured_ms": t.rel * ref_ms,
                "measured_raw_ms": t.ms,
            }
        )
    results["models"] = rows
    comparisons = []
    searched = [r for r in rows if r["name"].startswith("searched")]
    for r in rows:
        if r["name"].startswith("searched"):
            continue
        faster = [s for s in searched if s["measured_ms"] <= r["measured_ms"]]
        best = max(faster, key=lambda s: s["test_accuracy"]) if faster else None
        as_good = [s for s in searched if s["test_accuracy"] >= r["test_accuracy"]]
        quickest = min(as_good, key=lambda s: s["measured_ms"]) if as_good else None
        comparisons.append(
            {
                "reference": r["name"],
                "ref_accuracy": r["test_accuracy"],
                "ref_ms": r["measured_ms"],
                "best_searched_at_equal_or_lower_latency": best and best["name"],
                "accuracy_gain_pts": best and (best["test_accuracy"] - r["test_accuracy"]) * 100,
                "fastest_searched_at_equal_or_better_accuracy": quickest and quickest["name"],
                "speedup": quickest and r["measured_ms"] / quickest["measured_ms"],
            }
        )
    results["comparisons"] = comparisons

    # report
    out = Path(args.out)
    atomic_write_json(out / "search.json", results)
    md = ["| sampler | trials | front size | hypervolume | vs random |", "|---|---|---|---|---|"]
    for k, s in searches.items():
        md.append(
            f"| {k} | {s['trials']} | {len(s['front'])} | {s['hypervolume']:.4f} | {s['hypervolume_vs_random']:.3f} |"
        )
    md += [
        "",
        "| model | arch | stand-alone test acc | supernet test acc | predicted ms | measured ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['name']} | {md_code(r['arch'])} | {r['test_accuracy']:.4f} | "
            f"{r['supernet_test_accuracy']:.4f} | {r['predicted_ms']:.3f} | "
            f"{r['measured_ms']:.3f} |"
        )
    md += [
        "",
        "| reference | ref acc | ref ms | best searched at <= latency | acc gain (pts) | fastest searched at >= "
        "acc | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        gain = f"{c['accuracy_gain_pts']:+.2f}" if c["accuracy_gain_pts"] is not None else "-"
        speed = f"{c['speedup']:.2f}x" if c["speedup"] is not None else "-"
        md.append(
            f"| {c['reference']} | {c['ref_accuracy']:.4f} | {c['ref_ms']:.3f} | "
            f"{c['best_searched_at_equal_or_lower_latency'] or '-'} | {gain} | "
            f"{c['fastest_searched_at_equal_or_better_accuracy'] or '-'} | {speed} |"
        )
    tp = results["throughput_trials_per_minute"]
    md += [
        "",
        f"Ranking fidelity: Kendall tau {results['ranking_fidelity']['kendall_tau']:.3f} over "
        f"{results['ranking_fidelity']['n']} archs. Search throughput (NSGA-II, accuracy evaluation included): "
        f"{tp:.1f} trials/minute ({results['throughput_note']}).",
    ]
    atomic_write_text(out / "search.md", "\n".join(md) + "\n")
    print("\n".join(md))
    print(json.dumps({"lut": results["lut"]}, default=str))


if __name__ == "__main__":
    main()
