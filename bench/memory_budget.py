"""A search under a microcontroller-class int8 memory budget vs the same search under latency alone.

The bench space (`small` at 24 and 28 px) with the supernet of ``bench/supernet.py`` and
the int8 table of this CPU (built and validated if missing). One device, int8, latency
budget ``--share`` x the largest subnet's predicted latency; two searches of ``--trials``
trials with the default (guided) sampler and the same seed:

- **latency only**: the latency budget;
- **memory**: the same latency budget and ``--ram-kb`` of activation memory and
  ``--flash-kb`` of model file, both int8 (default 32 kB and 512 kB: a Cortex-M7-class
  part with 64 kB of SRAM left to the model and its runtime and half a megabyte of flash;
  the space's smallest arch needs 18 kB and 357 kB).

Both share one evaluation cache (an arch's validation accuracy is computed once). Each
search's winner (the most accurate arch within all its budgets) is exported as finalize
deploys it (the QAT int8 export of the subnet, calibrated on training images), and the
file's bytes and its graph's activation peak are measured; the two winners are timed in
one interleaved batch on this CPU. Results: bench/results/memory_budget.{json,md,png}.

    python bench/memory_budget.py          # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _setup import add_supernet_args, bench_predictor, log, md_code, quiet_optuna, supernet_bench

from edgenas.data import batches
from edgenas.export import activation_peak
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend, Protocol, reference_model
from edgenas.nas import DeviceObjective, SearchConfig, SubnetEvaluator, pareto_rows, run_search
from edgenas.quant import calibrate_qat, export_qat, prepare_qat
from edgenas.search_spaces import KB

DEVICE = "mcu-int8"


def deployed(space, arch, evaluator, splits) -> bytes:
    """The QAT int8 export finalize deploys, calibrated (QAT finetuning changes values, not the file's layout)."""
    net = evaluator.subnet(arch).cpu().eval()
    calib = next(
        batches(
            splits.train,
            batch_size=64,
            resolution=arch.resolution,
            channels=space.in_chs,
            mean=splits.mean,
            std=splits.std,
            shuffle=True,
            rng=np.random.default_rng(0),
        )
    )[0]
    return export_qat(calibrate_qat(prepare_qat(net), [calib]), net.input_shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--share", type=float, default=0.5, help="latency budget: this share of the largest's latency")
    p.add_argument("--ram-kb", type=float, default=32.0, help="activation-memory budget, int8, kB of 1024 bytes")
    p.add_argument("--flash-kb", type=float, default=512.0, help="model-file budget, int8, kB of 1024 bytes")
    p.add_argument("--lut-int8", default="runs/bench_deployed/lut_int8.json", help="built and validated if missing")
    add_supernet_args(p, workdir="runs/bench_memory")
    args = p.parse_args()
    quiet_optuna()

    work, out = Path(args.workdir), Path(args.out)
    space, splits, supernet = supernet_bench(args)
    backend = LocalBackend(threads=1)
    predictor = bench_predictor(space, Path(args.lut_int8), backend, precision="int8")
    budget_ms = args.share * predictor.predict(space.largest())
    evaluator = SubnetEvaluator(supernet, splits, seed=0)  # the search's default evaluation (4 x 2,000)
    cache_path = work / "accuracy.json"
    cache: dict[str, float] = read_json(cache_path) if cache_path.exists() else {}

    def evaluate(arch) -> float:
        if str(arch) not in cache:
            cache[str(arch)] = evaluator(arch)
            atomic_write_json(cache_path, cache)
        return cache[str(arch)]

    searches = {
        "latency only": DeviceObjective(DEVICE, predictor, budget_ms),
        "memory": DeviceObjective(DEVICE, predictor, budget_ms, ram_kb=args.ram_kb, flash_kb=args.flash_kb),
    }
    memory_ok = {"ram_kb:int8": args.ram_kb, "flash_kb:int8": args.flash_kb}
    results = {}
    for name, device in searches.items():
        start = time.time()
        config = SearchConfig(n_trials=args.trials, seed=args.seed, study_name=name.replace(" ", "_"))
        study = run_search(space, evaluate, [device], config, work / name.replace(" ", "_"), progress=False)
        rows, _ = pareto_rows(study)
        ok = [r for r in rows if r[f"within_budget:{DEVICE}"]]
        winner = max(ok, key=lambda r: r["accuracy"])
        fits = [all(r[k] <= v for k, v in memory_ok.items()) for r in rows]
        results[name] = {
            "winner": winner,
            "trials": len(rows),
            "feasible": len(ok),
            "within_memory_budget": int(sum(fits)),
            "seconds": time.time() - start,
        }
        log(f"{name}: {len(rows)} trials, winner {winner['arch']} ({winner['accuracy'] * 100:.2f} %)")

    # the winners as deployed: file bytes, activation peak of the file's graph, latency in one batch
    files = {n: deployed(space, space.parse(r["winner"]["arch"]), evaluator, splits) for n, r in results.items()}
    timings, ref, _ = backend.measure(
        list(files.values()), reference_model("int8"), Protocol(**predictor.table.header["protocol"])
    )
    for (name, data), t in zip(files.items(), timings):
        w = results[name]["winner"]
        results[name]["deployed"] = {
            "file_kb": len(data) / KB,
            "activation_kb": activation_peak(data) / KB,
            "latency_ms": t.ms,
        }
        results[name]["violates_memory_budget"] = [k for k, v in memory_ok.items() if w[k] > v]
    result = {
        "settings": {k: v for k, v in vars(args).items()},
        "budget_ms": budget_ms,
        "reference_ms": ref.ms,
        "cpu": backend.fingerprint()["cpu"],
        "searches": results,
    }
    atomic_write_json(out / "memory_budget.json", result)
    atomic_write_text(out / "memory_budget.md", markdown(result))
    figure(work, results, args, budget_ms, out / "memory_budget.png")
    print(markdown(result))


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Searching under a microcontroller-class int8 memory budget",
        "",
        f"`python bench/memory_budget.py`: the bench space on full Fashion-MNIST, one int8 device (this CPU's "
        f"int8 table), latency budget {result['budget_ms']:.3f} ms ({s['share']} x the largest subnet's); "
        f"memory budget {s['ram_kb']:g} kB of activations and {s['flash_kb']:g} kB of model file (int8, kB of "
        f"1024 bytes). {s['trials']} trials each, guided sampler, seed {s['seed']}; accuracy: supernet, "
        "validation (4 BN batches x 2,000 images).",
        "",
        "| search | winner | val accuracy | latency (ms) predicted / measured | RAM kB predicted / file "
        "| flash kB predicted / file | within the memory budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["searches"].items():
        w, d = r["winner"], r["deployed"]
        over = {"ram_kb:int8": "RAM", "flash_kb:int8": "flash"}
        bad = ", ".join(over[k] for k in r["violates_memory_budget"]) or "yes"
        lines.append(
            f"| {name} | {md_code(w['arch'])} | {w['accuracy'] * 100:.2f} % "
            f"| {w['latency_ms:' + DEVICE]:.3f} / {d['latency_ms']:.3f} "
            f"| {w['ram_kb:int8']:.1f} / {d['activation_kb']:.1f} | {w['flash_kb:int8']:.1f} / "
            f"{d['file_kb']:.1f} | {bad if bad == 'yes' else 'no: over ' + bad} |"
        )
    lines.append("")
    for name, r in result["searches"].items():
        lines.append(
            f"- {name}: {r['trials']} trials, {r['feasible']} within all its budgets, "
            f"{r['within_memory_budget']} within the memory budget; {r['seconds']:.0f} s"
        )
    lines += [
        "",
        "Measured: the winner's QAT int8 export (supernet weights, BN recalibrated, calibrated on 64 "
        "training images): the file's bytes, the largest sum of live tensors along its graph "
        "(`edgenas.export.activation_peak`), and both winners timed in one interleaved batch on "
        f"{result['cpu']} (1 thread, batch 1).",
    ]
    return "\n".join(lines) + "\n"


def figure(work: Path, results: dict, args: argparse.Namespace, budget_ms: float, path: Path) -> None:
    """Both searches' trials, accuracy vs latency, marked by whether they fit the memory budget."""
    import optuna
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(results)
    fig = make_subplots(rows=1, cols=2, subplot_titles=names, shared_yaxes=True)
    for col, name in enumerate(names, 1):
        key = name.replace(" ", "_")
        study = optuna.load_study(study_name=key, storage=f"sqlite:///{(work / key / 'study.db').resolve()}")
        rows, _ = pareto_rows(study)
        fits = np.array([r["ram_kb:int8"] <= args.ram_kb and r["flash_kb:int8"] <= args.flash_kb for r in rows])
        for ok, label, color in ((True, "fits the memory budget", "#1f77b4"), (False, "over it", "#d62728")):
            part = [r for r, f in zip(rows, fits) if f == ok]
            fig.add_trace(
                go.Scatter(
                    x=[r[f"latency_ms:{DEVICE}"] for r in part],
                    y=[r["accuracy"] * 100 for r in part],
                    mode="markers",
                    name=label,
                    marker=dict(color=color, size=6),
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        w = results[name]["winner"]
        fig.add_trace(
            go.Scatter(
                x=[w[f"latency_ms:{DEVICE}"]],
                y=[w["accuracy"] * 100],
                mode="markers",
                name="winner",
                marker=dict(symbol="star", size=16, color="#2ca02c"),
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
        fig.add_vline(x=budget_ms, line_dash="dash", line_color="#555", row=1, col=col)
    fig.update_xaxes(title_text="predicted int8 latency (ms)")
    fig.update_yaxes(title_text="val accuracy (%)", col=1)
    fig.update_layout(
        title=f"int8 search, budget {budget_ms:.3f} ms; memory budget {args.ram_kb:g} kB RAM, "
        f"{args.flash_kb:g} kB flash",
        height=460,
        width=1100,
        template="plotly_white",
    )
    try:
        fig.write_image(str(path))
    except Exception as exc:  # kaleido needs Chromium
        log(f"no PNG: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


if __name__ == "__main__":
    main()
