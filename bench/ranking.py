"""Ranking fidelity: does the supernet rank archs as training them stand-alone does?

Takes the supernet of ``bench/supernet.py`` (full Fashion-MNIST), ``--n`` archs spread
evenly over the predicted latency range of the bench space (an fp32 table of this CPU,
built and validated here; the largest and smallest arch included), trains each stand-alone
with the library's recipe (:class:`edgenas.nas.TrainConfig`'s optimiser, warm-up + cosine,
label smoothing, the data set's augmentation) at a reduced, stated budget (``--epochs`` on
``--train-limit`` training images), and compares:

- the search's evaluation settings (BN recalibration batches x validation images) by the
  Kendall tau between supernet-inherited and stand-alone accuracy on the *validation*
  split (the settings are chosen there, never on test);
- with the chosen settings, on the test split: Kendall tau, Spearman rho, top-5 overlap,
  and a scatter plot (bench/results/ranking.png).

Resumable, also on another machine: each stand-alone result is written as it finishes, to
``--out``/ranking_standalone_e<epochs>_n<train-limit>_s<seed>.json. ``--seeds`` trains each arch
that many times (seeds ``--seed``, ``--seed`` + 1, ...) and compares with their mean: one run's seed
noise is as large as the gaps between neighbouring archs.

    python bench/ranking.py                       # 16 archs, 3 epochs on 15,000 images each
    python bench/ranking.py --epochs 6 --train-limit 30000 --seeds 2   # the same archs, two runs each
    python bench/ranking.py --ties-of bench/results/ranking_e6_n30000_seeds2.json   # near ties only
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from _setup import add_supernet_args, bench_predictor, bench_splits, log, md_code, recipe_fit, supernet_bench
from scipy.stats import kendalltau, spearmanr

from edgenas.accelerator import Accelerator
from edgenas.data import Splits, batches, resolve_augment
from edgenas.distill import fit
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend, sample_spread
from edgenas.nas import SubnetEvaluator, accuracy
from edgenas.search_spaces import build_subnet

CALIB_BATCHES = (1, 2, 4, 8, 16, 32)
VAL_SIZES = (500, 1000, 2000, 3000)  # prefixes of the validation split


@torch.no_grad()
def val_correct(net, splits: Splits, resolution: int, channels: int) -> np.ndarray:
    """1/0 per validation image, in the split's order."""
    out = []
    for x, y in batches(
        splits.val,
        batch_size=256,
        resolution=resolution,
        channels=channels,
        mean=splits.mean,
        std=splits.std,
        accel=Accelerator.of(net),
    ):
        out.append((net(x).argmax(1) == y).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def top_overlap(a: list[float], b: list[float], k: int = 5) -> int:
    return len(set(np.argsort(a)[-k:]) & set(np.argsort(b)[-k:]))


def train_standalone(archs, space, splits, limited, predictor, accel, args, out: Path, seed: int) -> dict:
    """Each arch trained alone with seed ``seed``: {arch: {val, test, seconds, predicted_ms}}, every result
    written as it finishes to one file per budget and seed (never reused for another), kept with the results
    so that a run interrupted on one machine resumes on another."""
    fit_cfg = recipe_fit(args.epochs, seed)
    path = out / f"ranking_standalone_e{args.epochs}_n{args.train_limit}_s{seed}.json"
    standalone: dict = read_json(path) if path.exists() else {}
    for i, arch in enumerate(archs):
        key = str(arch)
        if key in standalone:
            continue
        torch.manual_seed(seed)
        net = build_subnet(space, arch)
        t0 = time.time()
        fit(net, limited, fit_cfg, resolution=arch.resolution, channels=space.in_chs, progress=False, accel=accel)
        score = {
            s: accuracy(net, getattr(splits, s), splits, resolution=arch.resolution, channels=space.in_chs)
            for s in ("val", "test")
        }
        standalone[key] = {**score, "seconds": time.time() - t0, "predicted_ms": predictor.predict(arch)}
        atomic_write_json(path, standalone)
        log(
            f"seed {seed} {i + 1}/{len(archs)} {key}: stand-alone val {score['val']:.4f} test {score['test']:.4f} "
            f"({time.time() - t0:.0f} s)"
        )
    return standalone


TIE_PTS = (0.1, 0.2, 0.3, 0.5, 1.0)


def near_ties(rows: list[dict], key: str = "standalone_val") -> list[dict]:
    """Per threshold d: of the arch pairs whose supernet accuracies differ by under d points, how many the
    supernet orders as stand-alone training does (``key``), and how many the slower arch of the pair wins:
    what ``search.tie_pts`` rests on (the search takes the slower arch of a near tie)."""
    out = []
    for d in TIE_PTS:
        pairs = [
            (a, b)
            for i, a in enumerate(rows)
            for b in rows[i + 1 :]
            if abs(a["supernet_test"] - b["supernet_test"]) * 100 < d and a[key] != b[key]
        ]
        out.append(
            {
                "under_pts": d,
                "pairs": len(pairs),
                "supernet_right": sum((a["supernet_test"] > b["supernet_test"]) == (a[key] > b[key]) for a, b in pairs),
                "slower_right": sum((a["predicted_ms"] > b["predicted_ms"]) == (a[key] > b[key]) for a, b in pairs),
            }
        )
    return out


def ties_markdown(ties: list[dict], key: str) -> list[str]:
    return [
        f"Near ties (the stand-alone side: `{key}`): pairs of archs whose supernet accuracies differ by under d "
        "points, and how often each rule orders them as stand-alone training does.",
        "",
        "| supernet accuracies differ by under | pairs | the more accurate on the supernet wins | the slower wins |",
        "|---|---|---|---|",
        *(f"| {t['under_pts']:g} pt | {t['pairs']} | {t['supernet_right']} | {t['slower_right']} |" for t in ties),
    ]


def print_ties(path: Path) -> None:
    """``--ties-of``: the near-tie table of a results file already written (no training)."""
    rows = read_json(path)["archs"]
    for key in ("standalone_val", "standalone_test"):
        print("\n".join(ties_markdown(near_ties(rows, key), key)) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ties-of", type=Path, default=None, help="only print the near-tie table of this results file")
    p.add_argument("--n", type=int, default=16, help="archs, spread over the predicted latency range")
    p.add_argument("--epochs", type=int, default=3, help="stand-alone epochs")
    p.add_argument("--train-limit", type=int, default=15000, help="stand-alone training images")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="the archs' spread and the first stand-alone seed")
    p.add_argument(
        "--seeds", type=int, default=1, help="stand-alone runs per arch (seeds --seed, --seed+1, ...), averaged"
    )
    add_supernet_args(p, workdir="runs/bench_ranking")
    args = p.parse_args()
    if args.ties_of is not None:
        print_ties(args.ties_of)
        return

    work, out = Path(args.workdir), Path(args.out)
    space, splits, supernet = supernet_bench(args)
    augment = resolve_augment("auto", "fashion-mnist")

    # archs spread over this CPU's predicted latency
    predictor = bench_predictor(space, work / "lut_fp32.json", LocalBackend(threads=1))
    # the archs are chosen once and kept with the results: another machine's table would
    # spread other archs, and the stand-alone results already made would not be reused
    chosen_path = out / f"ranking_archs_n{args.n}_s{args.seed}.json"
    if chosen_path.exists():
        archs = [space.parse(a) for a in read_json(chosen_path)]
    else:
        archs = sample_spread(predictor, args.n, np.random.default_rng(args.seed))
        atomic_write_json(chosen_path, [str(a) for a in archs])
    log(f"{len(archs)} archs, predicted {predictor.predict(archs[0]):.3f}-{predictor.predict(archs[-1]):.3f} ms")

    # stand-alone training, one result per arch and seed as it finishes
    limited = bench_splits(args.train_limit)
    accel = Accelerator.create(args.device)
    seeds = range(args.seed, args.seed + args.seeds)
    runs = [train_standalone(archs, space, splits, limited, predictor, accel, args, out, s) for s in seeds]
    # the stand-alone side's figure: the mean over its seeds (one seed's noise is ~0.2-0.3 pt, as large
    # as the gaps between neighbouring archs)
    standalone = {
        str(a): {
            **{s: float(np.mean([r[str(a)][s] for r in runs])) for s in ("val", "test")},
            "predicted_ms": runs[0][str(a)]["predicted_ms"],  # the same table's prediction in every run
        }
        for a in archs
    }

    # the search's evaluation settings, judged on validation: per calibration setting, every
    # val image's correctness once, so each validation size is a prefix of the same predictions
    sa_val = [standalone[str(a)]["val"] for a in archs]
    grid = []
    for calib in CALIB_BATCHES:
        ev = SubnetEvaluator(supernet, splits, calib_batches=calib, seed=args.seed, accel=accel)
        t0 = time.time()
        correct = np.array([val_correct(ev.subnet(a), splits, a.resolution, space.in_chs) for a in archs])
        seconds = (time.time() - t0) / len(archs)
        for n_val in VAL_SIZES:
            sn = correct[:, :n_val].mean(1)
            grid.append(
                {
                    "calib_batches": calib,
                    "val_images": min(n_val, correct.shape[1]),
                    "kendall_tau": float(kendalltau(sn, sa_val)[0]),
                    "spearman": float(spearmanr(sn, sa_val)[0]),
                    # evaluation time: calibration plus this share of the full validation pass
                    "seconds_per_arch": seconds,
                }
            )
            log(f"calib {calib} x val {n_val}: tau {grid[-1]['kendall_tau']:.3f}")
    # tau is undefined (nan) when either side ties throughout; such a setting cannot be chosen
    ranked = [g for g in grid if not np.isnan(g["kendall_tau"])] or grid[-1:]
    best_tau = max(g["kendall_tau"] for g in ranked)
    # the cheapest setting within 0.02 of the best tau: evaluation time is the search's budget
    chosen = min(
        (g for g in ranked if not g["kendall_tau"] < best_tau - 0.02),
        key=lambda g: (g["calib_batches"], g["val_images"]),
    )

    # with the chosen settings, on test
    ev = SubnetEvaluator(
        supernet, splits, split="test", calib_batches=chosen["calib_batches"], seed=args.seed, accel=accel
    )
    sn_test = [ev(a) for a in archs]
    sa_test = [standalone[str(a)]["test"] for a in archs]
    fidelity = {
        "n": len(archs),
        "kendall_tau": float(kendalltau(sn_test, sa_test)[0]),
        "spearman": float(spearmanr(sn_test, sa_test)[0]),
        "top5_overlap": top_overlap(sn_test, sa_test),
    }
    rows = [
        {
            "arch": str(a),
            "predicted_ms": standalone[str(a)]["predicted_ms"],
            "supernet_test": s,
            "standalone_test": t,
            "standalone_val": standalone[str(a)]["val"],
            "standalone_test_per_seed": [r[str(a)]["test"] for r in runs],
        }
        for a, s, t in zip(archs, sn_test, sa_test)
    ]
    results = {
        "settings": vars(args),
        "augment": list(augment),
        "fit": dataclasses.asdict(recipe_fit(args.epochs, args.seed)),
        "standalone_seeds": list(seeds),
        "grid": grid,
        "chosen": chosen,
        "fidelity": fidelity,
        "near_ties": near_ties(rows),
        "archs": rows,
    }
    # the default budget's results are ranking.*, another budget's (or seed count's) carry it in their name
    stem = "ranking" if (args.epochs, args.train_limit) == (3, 15000) else f"ranking_e{args.epochs}_n{args.train_limit}"
    stem += f"_seeds{args.seeds}" if args.seeds > 1 else ""
    atomic_write_json(out / f"{stem}.json", results)
    figure(rows, fidelity).write_image(str(out / f"{stem}.png"), width=900, height=560)

    md = [
        f"# Ranking fidelity ({len(archs)} archs, supernet of bench/supernet.py)",
        "",
        f"`python bench/ranking.py --n {args.n} --epochs {args.epochs} --train-limit {args.train_limit} --seeds "
        f"{args.seeds}`: stand-alone training with the library's recipe at a reduced budget ({args.epochs} epochs on "
        f"{args.train_limit:,} Fashion-MNIST images; the mean of {args.seeds} seed(s) per arch); supernet accuracy "
        "with BN recalibrated.",
        "",
        f"**Test split, chosen settings ({chosen['calib_batches']} calibration batches): Kendall tau "
        f"{fidelity['kendall_tau']:.3f}, Spearman {fidelity['spearman']:.3f}, top-5 overlap "
        f"{fidelity['top5_overlap']}/5** (target tau >= 0.6: "
        f"{'met' if fidelity['kendall_tau'] >= 0.6 else 'not met'}).",
        "",
        "Evaluation settings, Kendall tau on the validation split (where they are chosen):",
        "",
        "| calibration batches | " + " | ".join(f"{v} val images" for v in VAL_SIZES) + " |",
        "|---|" + "---|" * len(VAL_SIZES),
    ]
    for calib in CALIB_BATCHES:
        cells = [f"{g['kendall_tau']:.3f}" for g in grid if g["calib_batches"] == calib]
        md.append(f"| {calib} | " + " | ".join(cells) + " |")
    md += [
        "",
        f"Chosen: {chosen['calib_batches']} batches x {chosen['val_images']} images (the cheapest within "
        f"0.02 of the best tau {best_tau:.3f}; {chosen['seconds_per_arch']:.2f} s per arch with all "
        f"{len(splits.val.labels):,} validation images).",
        "",
        "| arch | predicted ms | supernet test | stand-alone test |",
        "|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {md_code(r['arch'])} | {r['predicted_ms']:.3f} | {r['supernet_test'] * 100:.2f} % | "
            f"{r['standalone_test'] * 100:.2f} % |"
        )
    md += ["", *ties_markdown(results["near_ties"], "standalone_val")]
    md += ["", f"![supernet vs stand-alone]({stem}.png)"]
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


def figure(rows: list[dict], fidelity: dict):
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=[r["supernet_test"] * 100 for r in rows],
            y=[r["standalone_test"] * 100 for r in rows],
            mode="markers",
            marker={
                "size": 10,
                "color": [r["predicted_ms"] for r in rows],
                "colorscale": "Viridis",
                "colorbar": {"title": "predicted ms"},
            },
            text=[r["arch"] for r in rows],
        )
    )
    title = (
        f"Supernet vs stand-alone test accuracy: Kendall tau {fidelity['kendall_tau']:.2f}, "
        f"Spearman {fidelity['spearman']:.2f}"
    )
    fig.update_layout(
        title=title,
        xaxis_title="supernet (inherited weights, BN recalibrated), %",
        yaxis_title="stand-alone (trained alone), %",
        template="plotly_white",
    )
    return fig


if __name__ == "__main__":
    main()
