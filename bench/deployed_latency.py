"""Do the latency tables predict the models users deploy? Trained subnets exported as finalize exports them.

For ``--n`` archs spread over the bench space's predicted latency, each subnet with the
trained weights of ``bench/supernet.py`` (BN recalibrated on training images) is exported
the three ways finalize deploys a model:

- fp32: ``export_onnx``;
- PTQ int8: ``export_onnx(precision="int8")`` calibrated on 64 training images;
- QAT int8: ``prepare_qat`` + ``calibrate_qat`` + ``export_qat`` (QAT's finetuning changes
  values, not the graph, so the calibrated model stands for a finetuned one);

plus the int8 export of a freshly initialised subnet (what ``arch export`` used to write:
its graph depended on the zero-valued weights and ran 2.4x slower), and the subnet pruned
as finalize prunes it (L1, ``--prune`` of its channels in 10 % steps; finetuning changes
values, not shapes, so it is left out) exported fp32 and QAT int8. Each precision is timed
in one interleaved batch against its table's reference model, with the table's protocol,
and compared as a ratio to the reference with the calibrated prediction of the fp32 or int8
table of this CPU (both built and validated here if missing), as table validation does.
Target: every deployed export within +-10 % of its prediction. The same files are then timed
as a user times one (as ``bench/lut_accuracy.py``'s unseen check does: turns of 50 ms of
back-to-back runs, round-robin, the 10th percentile over the turns (the fast state), over the reference's):
the table's short turns leave little time to a model whose weights other models evicted,
which the largest archs feel (``bench/cache_cliff.py``). Files with more parameters than
the table's calibration was fitted on are marked ``extrapolated``.

Pruning leaves channel counts that no arch of the space has: the pruned models' blocks are
estimated from the table's entries of the same shape (``Predictor.predict_specs``).

``--device`` times the files another runtime deploys, in its own format (``.pte`` for
ExecuTorch, ``.param``/``.bin`` for ncnn, OpenVINO's IR), against that runtime's fp32 table:
the fp32 and pruned fp32 exports (results: ``deployed_latency_<device>.{json,md}``).

    python bench/deployed_latency.py          # ~10 minutes on 2 cores (the int8 table: ~5 more)
    python bench/deployed_latency.py --device executorch --table-resolutions 28 --lut-fp32 TABLE
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _setup import LUT_FP32, add_supernet_args, bench_predictor, device_tag, log, md_code, supernet_bench
from lut_accuracy import plain_timings

from edgenas.data import batches
from edgenas.export import export_for, export_onnx
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import Protocol, make_backend, make_runtime, noop_for, reference_model, sample_spread
from edgenas.nas import SubnetEvaluator
from edgenas.pruning import PruneConfig, progressive_prune
from edgenas.quant import calibrate_qat, export_qat, prepare_qat
from edgenas.search_spaces import build_subnet, current_specs, get_space

KINDS = {
    "fp32": "fp32",
    "ptq_int8": "int8",
    "qat_int8": "int8",
    "fresh_int8": "int8",
    "pruned_fp32": "fp32",
    "pruned_qat_int8": "int8",
}


def exports(space, arch, evaluator, splits, prune: float, fmt: str) -> tuple[dict[str, bytes], tuple]:
    """The exports of ``arch`` (six in ONNX, fp32 and pruned fp32 in another format) and the pruned specs."""
    res, chans = arch.resolution, space.in_chs
    shape = (1, chans, res, res)
    net = evaluator.subnet(arch).cpu().eval()
    calib = next(
        batches(
            splits.train,
            batch_size=64,
            resolution=res,
            channels=chans,
            mean=splits.mean,
            std=splits.std,
            shuffle=True,
            rng=np.random.default_rng(0),
        )
    )[0]
    steps = round(prune / 0.1)
    pruned, _ = progressive_prune(
        net,
        torch.zeros(shape),
        PruneConfig(step=0.1, max_steps=steps, tolerance=1.0),
        finetune=lambda m: None,
        evaluate=lambda m: 1.0,
    )
    if fmt != "onnx":
        return {"fp32": export_for(fmt, net, shape), "pruned_fp32": export_for(fmt, pruned, shape)}, current_specs(
            pruned
        )
    qat = calibrate_qat(prepare_qat(net), [calib])
    pruned_qat = calibrate_qat(prepare_qat(pruned), [calib])
    torch.manual_seed(0)
    return {
        "fp32": export_onnx(net, shape),
        "ptq_int8": export_onnx(net, shape, precision="int8", calibration=calib.numpy()),
        "qat_int8": export_qat(qat.eval(), shape),
        "fresh_int8": export_onnx(build_subnet(space, arch).eval(), shape, precision="int8", calibration=calib.numpy()),
        "pruned_fp32": export_onnx(pruned, shape),
        "pruned_qat_int8": export_qat(pruned_qat.eval(), shape),
    }, current_specs(pruned)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16, help="archs, spread over the predicted latency range")
    p.add_argument("--lut-fp32", default=LUT_FP32, help="built and validated if missing")
    p.add_argument("--lut-int8", default="runs/bench_deployed/lut_int8.json", help="built and validated if missing")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prune", type=float, default=0.3, help="share of channels the pruned exports lose")
    p.add_argument("--device", default="local-cpu", help="local-cpu (ONNX Runtime), openvino, executorch, ncnn")
    p.add_argument("--table-resolutions", default=None, help="the archs' resolutions (default: --resolutions)")
    add_supernet_args(p, workdir=None)
    args = p.parse_args()

    space, splits, supernet = supernet_bench(args)
    # a table of bench/lut_accuracy.py: the whole small space's, measured at these resolutions only
    table_space, resolutions = space, None
    if args.table_resolutions:
        table_space, resolutions = get_space("small"), tuple(int(r) for r in args.table_resolutions.split(","))
    backend = make_backend(args.device, threads=1)
    fmt = backend.format
    kinds = KINDS if fmt == "onnx" else {k: v for k, v in KINDS.items() if k in ("fp32", "pruned_fp32")}
    precisions = sorted(set(kinds.values()))
    paths = {"fp32": args.lut_fp32, "int8": args.lut_int8}
    predictors = {
        prec: bench_predictor(
            table_space, Path(paths[prec]), backend, precision=prec, device=args.device, resolutions=resolutions
        )
        for prec in precisions
    }
    archs = sample_spread(predictors["fp32"], args.n, np.random.default_rng(args.seed))
    evaluator = SubnetEvaluator(supernet, splits, calib_batches=8, seed=0)
    made = {str(a): exports(space, a, evaluator, splits, args.prune, fmt) for a in archs}
    models = {a: m for a, (m, _) in made.items()}
    log(f"{len(archs)} archs exported {len(kinds)} ways ({fmt})")

    rows = []
    runtime = make_runtime(args.device, threads=1)  # for the second timing, as a user times a file
    for prec in precisions:
        table = predictors[prec].table
        batch = [(a, k) for a in archs for k, v in kinds.items() if v == prec]
        timings, ref, _ = backend.measure(
            [models[str(a)][k] for a, k in batch],
            reference_model(prec, fmt),
            Protocol(**table.header["protocol"]),
            noop_for(fmt),
        )
        for (a, k), t in zip(batch, timings):
            pruned = k.startswith("pruned")  # channel counts no arch has: those blocks estimated
            specs = made[str(a)][1] if pruned else space.block_specs(a)
            pred = predictors[prec].predict_specs(specs, estimate=pruned) / table.header["reference_ms"]
            rows.append(
                {
                    "arch": str(a),
                    "export": k,
                    "precision": prec,
                    "predicted_rel": pred,
                    "measured_rel": t.rel,
                    "predicted_ms": pred * ref.ms,
                    "measured_ms": t.ms,
                    "error": t.rel / pred - 1,
                    "extrapolated": predictors[prec].extrapolation(specs) is not None,
                }
            )
        log(f"{prec}: timed {len(batch)} models (reference {ref.ms:.3f} ms)")
        # and as a user times a file (long turns of back-to-back runs), as bench/lut_accuracy.py's unseen check
        files = [reference_model(prec, fmt)] + [models[str(a)][k] for a, k in batch]
        ref_plain, *plain = plain_timings([runtime.load(f) for f in files])
        for row, t in zip(rows[-len(batch) :], plain):
            row["plain_fast_ms"] = t["fast_ms"]
            row["plain_error"] = t["fast_ms"] / ref_plain["fast_ms"] / row["predicted_rel"] - 1
        log(f"{prec}: timed them again as a user does (reference {ref_plain['fast_ms']:.3f} ms)")

    summary = {}
    for k in kinds:
        err = np.array([r["error"] for r in rows if r["export"] == k])
        plain = np.array([r["plain_error"] for r in rows if r["export"] == k])
        summary[k] = {
            "n": len(err),
            "extrapolated": sum(r["extrapolated"] for r in rows if r["export"] == k),
            "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
            "median_error": float(np.median(err)),
            "mape": float(np.mean(np.abs(err))),
            "plain_within_10pct": float(np.mean(np.abs(plain) <= 0.10)),
            "plain_median_error": float(np.median(plain)),
        }
    tag = device_tag(args.device)
    atomic_write_json(
        Path(args.out) / f"deployed_latency{tag}.json",
        {"settings": vars(args), "runtime": backend.fingerprint()["runtime"], "summary": summary, "rows": rows},
    )
    atomic_write_text(Path(args.out) / f"deployed_latency{tag}.md", markdown(args, archs, kinds, summary, rows, fmt))
    print(markdown(args, archs, kinds, summary, rows, fmt))


def markdown(args, archs, kinds: dict, summary: dict, rows: list[dict], fmt: str) -> str:
    met = all(s["within_10pct"] == 1.0 for k, s in summary.items() if k != "fresh_int8")
    met_plain = all(s["plain_within_10pct"] == 1.0 for k, s in summary.items() if k != "fresh_int8")
    device = "" if args.device == "local-cpu" else f" --device {args.device}"
    if args.table_resolutions:
        device += f" --table-resolutions {args.table_resolutions}"
    md = [
        f"# Deployed exports vs the latency tables ({len(archs)} trained subnets, {fmt})",
        "",
        f"`python bench/deployed_latency.py --n {args.n}{device}`: subnets with the weights of bench/supernet.py, "
        f"exported as finalize exports them ({fmt}); each precision timed in one interleaved batch on this CPU "
        f"({args.device}, 1 thread, batch 1) against its table's reference model; prediction: the calibrated table "
        "of this runtime on this CPU.",
        "",
        f"Target (every deployed export within +-10 % of its prediction): timed with the table's protocol "
        f"**{'met' if met else 'not met'}**; timed as a user times a file (turns of 50 ms of back-to-back runs, "
        f"the 10th percentile of 20 turns, over the reference's) **{'met' if met_plain else 'not met'}**.",
        "",
        "| export | table | within +-10 % | median error | mean abs error | as a user times it: within +-10 % "
        "| median error | extrapolated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, s in summary.items():
        md.append(
            f"| {k} | {kinds[k]} | {s['within_10pct'] * 100:.0f} % of {s['n']} | "
            f"{s['median_error'] * 100:+.1f} % | {s['mape'] * 100:.1f} % | {s['plain_within_10pct'] * 100:.0f} % | "
            f"{s['plain_median_error'] * 100:+.1f} % | {s['extrapolated']} |"
        )
    md += [
        "",
        "`fresh_int8`: a freshly initialised (untrained) subnet; its graph is now the trained one's. "
        f"`pruned_*`: the subnet with {args.prune * 100:.0f} % of its channels pruned (L1, as finalize prunes), "
        "predicted from its own blocks, those the table lacks estimated from entries of the same shape. "
        "`extrapolated`, `*`: files whose parameters lie beyond those the table's calibration was fitted on "
        "(`Predictor.extrapolation`), which the card flags.",
        "",
        "Per file: predicted / measured with the table's protocol / error as a user times it.",
        "",
        "| arch | " + " | ".join(f"{k} ms (pred / measured / plain)" for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for a in archs:
        cells = {r["export"]: r for r in rows if r["arch"] == str(a)}
        md.append(
            f"| {md_code(str(a))} | "
            + " | ".join(
                f"{cells[k]['predicted_ms']:.3f}{'*' if cells[k]['extrapolated'] else ''} / "
                f"{cells[k]['measured_ms']:.3f} / {cells[k]['plain_error'] * 100:+.0f} %"
                for k in kinds
            )
            + " |"
        )
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
