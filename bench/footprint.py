"""Are the size and activation-memory predictions the exported files? Sampled archs, exported, compared.

For ``--n`` archs sampled from each of the `small` (24-32 px, grayscale) and `mbv3`
(128-224 px, RGB) spaces, plus each space's smallest and largest arch and ``--pruned``
archs of `small` pruned as finalize prunes them (L1 structured, 20 % of the channels in two
steps, multiples of 8), each model is exported as finalize exports it:

- fp32: ``export_onnx``;
- int8: ``prepare_qat`` + ``calibrate_qat`` + ``export_qat``, the QAT export finalize
  deploys (QAT changes weight values, not the graph or the file's layout);
- PTQ int8 (ONNX Runtime's static quantization): its size only, to say how far the
  predictor, which describes the QAT export, is from it.

Size: predicted (``net_footprint``: the search's ``footprint`` of the arch's blocks, with a
pruned net's own layer shapes) vs the file's bytes (no metadata; finalize adds about 1 kB of
it, which its card's prediction counts). Activation memory: predicted vs
:func:`edgenas.export.activation_peak`, the largest sum of live tensors along the exported
file's own graph (shapes from ONNX shape inference, the file's node order, element types as
stored, element-wise and Q/DQ steps in place). Targets:
size within 2 % for every arch at both precisions; memory within 10 %.

    python bench/footprint.py          # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from _setup import md_code

from edgenas.export import activation_peak, export_onnx
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.pruning import PruneConfig, progressive_prune
from edgenas.quant import calibrate_qat, export_qat, prepare_qat
from edgenas.search_spaces import KB, build_subnet, get_space, net_footprint


def _exports(net: torch.nn.Module, rng: np.random.Generator) -> dict[str, bytes]:
    shape = net.input_shape
    calib = torch.from_numpy(rng.standard_normal((8, *shape[1:]), dtype=np.float32))
    qat = calibrate_qat(prepare_qat(net), [calib])
    return {
        "fp32": export_onnx(net, shape),
        "int8": export_qat(qat, shape),
        "ptq": export_onnx(net, shape, precision="int8", calibration=calib.numpy()),
    }


def _row(kind: str, arch: str, net: torch.nn.Module, rng: np.random.Generator) -> dict:
    fp = net_footprint(net)  # what finalize predicts; for an unpruned net, the search's footprint(specs)
    files = _exports(net, rng)
    row = {
        "kind": kind,
        "arch": arch,
        "params": fp.params,
        "ptq_bytes": len(files["ptq"]),
        "ptq_vs_predicted_int8_pct": (len(files["ptq"]) / fp.size_bytes["int8"] - 1) * 100,
    }
    for p in ("fp32", "int8"):
        size, mem = len(files[p]), activation_peak(files[p])
        row.update(
            {
                f"{p}_bytes": size,
                f"{p}_predicted_bytes": fp.size_bytes[p],
                f"{p}_nodes": len(onnx.load_from_string(files[p]).graph.node),
                f"{p}_activation_bytes": mem,
                f"{p}_predicted_activation_bytes": fp.activation_bytes[p],
            }
        )
        row[f"{p}_size_error_pct"] = (row[f"{p}_predicted_bytes"] / size - 1) * 100
        row[f"{p}_activation_error_pct"] = (row[f"{p}_predicted_activation_bytes"] / mem - 1) * 100
    return row


def _pruned(space, arch, rng: np.random.Generator) -> torch.nn.Module:
    net = build_subnet(space, arch).eval()
    x = torch.zeros(net.input_shape)
    pruned, _ = progressive_prune(
        net, x, PruneConfig(step=0.1, max_steps=2, tolerance=1.0), finetune=lambda m: None, evaluate=lambda m: 0.5
    )
    return pruned


def _summary(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for p in ("fp32", "int8"):
        size = np.array([r[f"{p}_size_error_pct"] for r in rows])
        mem = np.array([r[f"{p}_activation_error_pct"] for r in rows])
        out[p] = {
            "size_within_2pct": int((np.abs(size) <= 2).sum()),
            "size_max_abs_error_pct": float(np.abs(size).max()),
            "size_mean_error_pct": float(size.mean()),
            "activation_within_10pct": int((np.abs(mem) <= 10).sum()),
            "activation_max_abs_error_pct": float(np.abs(mem).max()),
        }
    out["ptq_vs_predicted_int8_pct"] = [
        float(min(r["ptq_vs_predicted_int8_pct"] for r in rows)),
        float(max(r["ptq_vs_predicted_int8_pct"] for r in rows)),
    ]
    return out


def _markdown(result: dict) -> str:
    lines = [
        "# Size and activation memory: predictions vs exported files",
        "",
        "`python bench/footprint.py`: each arch exported fp32 (`export_onnx`) and int8 (the QAT export "
        "finalize deploys); size = the file's bytes, activation memory = the largest sum of live tensors "
        "along the file's graph (`edgenas.export.activation_peak`).",
        "",
        "| set | archs | fp32 size within 2 % | worst | int8 size within 2 % | worst | fp32 RAM within 10 % "
        "| worst | int8 RAM within 10 % | worst | PTQ file vs int8 prediction |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        f, i = s["fp32"], s["int8"]
        lo, hi = s["ptq_vs_predicted_int8_pct"]
        lines.append(
            f"| {name} | {s['n']} | {f['size_within_2pct']}/{s['n']} | {f['size_max_abs_error_pct']:.2f} % "
            f"| {i['size_within_2pct']}/{s['n']} | {i['size_max_abs_error_pct']:.2f} % "
            f"| {f['activation_within_10pct']}/{s['n']} | {f['activation_max_abs_error_pct']:.1f} % "
            f"| {i['activation_within_10pct']}/{s['n']} | {i['activation_max_abs_error_pct']:.1f} % "
            f"| {lo:+.1f} to {hi:+.1f} % |"
        )
    lines += [
        "",
        "Every arch (kB of 1024 bytes; predicted in brackets):",
        "",
        "| set | arch | fp32 file | int8 file | fp32 RAM | int8 RAM |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        cells = [
            f"{r[f'{p}_{k}bytes'] / KB:.1f} ({r[f'{p}_predicted_{k}bytes'] / KB:.1f})"
            for k in ("", "activation_")
            for p in ("fp32", "int8")
        ]
        lines.append(f"| {r['kind']} | {md_code(r['arch'])} | " + " | ".join(cells) + " |")
    lines += ["", f"{result['seconds']:.0f} s on {result['cpu']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="sampled archs per space")
    ap.add_argument("--pruned", type=int, default=10, help="pruned archs of the small space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/footprint")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    start, rows = time.time(), []
    for name in ("small", "mbv3"):
        space = get_space(name)
        archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(args.n)]
        for arch in archs:
            rows.append(_row(name, str(arch), build_subnet(space, arch).eval(), rng))
        print(f"{name}: {len(archs)} archs, {time.time() - start:.0f} s", flush=True)
    space = get_space("small")
    for _ in range(args.pruned):
        arch = space.sample(rng)
        rows.append(_row("small, pruned 20 %", str(arch), _pruned(space, arch, rng), rng))
    print(f"pruned: {args.pruned} archs, {time.time() - start:.0f} s", flush=True)
    kinds = dict.fromkeys(r["kind"] for r in rows)
    result = {
        "seed": args.seed,
        "cpu": _cpu(),
        "seconds": time.time() - start,
        "summary": {k: _summary([r for r in rows if r["kind"] == k]) for k in kinds},
        "rows": rows,
    }
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), _markdown(result))
    print(_markdown(result).split("\n\nEvery arch")[0])


def _cpu() -> str:
    from edgenas.latency_tables import LocalBackend

    return LocalBackend(threads=1).fingerprint()["cpu"]


if __name__ == "__main__":
    main()
