"""A finalized model on both runtimes: latency on ONNX Runtime and OpenVINO, accuracy of the deployed files.

Takes a device's models ``bench/deploy.py`` finalized (``--finalize``: its fp32 ``pruned.onnx`` and
its int8 file: ``qat_int8.onnx`` where QAT ran, else the post-training ``ptq_int8.onnx``; with
``finalize.qat: auto`` QAT runs only where the device times int8 faster) and, on this CPU with one
thread:

- times each file on ONNX Runtime and on OpenVINO, each runtime in one interleaved batch
  with its reference model (a symbolic batch, which OpenVINO runs 1.2-1.5x slower at
  batch 1, is fixed at 1 for OpenVINO, as finalize exports for an OpenVINO device);
- converts each to OpenVINO IR (``save_openvino_ir``) and scores the ONNX file and the IR
  on the Fashion-MNIST test split with ``edgenas predict``'s code (``accuracy_on``: the
  preprocessing the file carries, its runtime alone).

Results: bench/results/deployed_runtimes.{json,md}.

    python bench/deployed_runtimes.py          # after bench/deploy.py; ~3 minutes
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx

from edgenas.export import save_openvino_ir
from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import Protocol, make_backend, reference_model
from edgenas.predict import Model, accuracy_on

PRECISIONS = {"pruned": "fp32", "qat_int8": "int8", "ptq_int8": "int8"}


def stages_in(folder: Path) -> list[str]:
    """The fp32 file and the int8 file that a finalize folder holds (QAT's where it ran, else PTQ's)."""
    if not (folder / "pruned.onnx").exists():
        raise SystemExit(f"{folder}: no pruned.onnx; give a finalize folder of bench/deploy.py with --finalize")
    int8 = next((s for s in ("qat_int8", "ptq_int8") if (folder / f"{s}.onnx").exists()), None)
    if int8 is None:
        raise SystemExit(f"{folder}: neither qat_int8.onnx nor ptq_int8.onnx; finalize writes one of them")
    return ["pruned", int8]


def batch_one(data: bytes) -> bytes:
    """The model with its symbolic batch dimension fixed at 1."""
    model = onnx.load_from_string(data)
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_param:
            dim.dim_value = 1
    return model.SerializeToString()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--finalize", default="runs/fashion-mnist/finalize/cpu-fast", help="a device's folder of bench/deploy.py's run"
    )
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    folder = Path(args.finalize)
    stages_here = stages_in(folder)
    files = {s: (folder / f"{s}.onnx").read_bytes() for s in stages_here}
    rows = {s: {"precision": PRECISIONS[s]} for s in stages_here}
    runtimes = {}
    for device in ("local-cpu", "openvino:CPU"):
        backend = make_backend(device, threads=1)
        runtimes[device] = backend.fingerprint()["runtime"]
        for prec in ("fp32", "int8"):
            stages = [s for s in stages_here if PRECISIONS[s] == prec]
            models = [files[s] if device == "local-cpu" else batch_one(files[s]) for s in stages]
            timings, ref, _ = backend.measure(models, reference_model(prec), Protocol(rounds=args.rounds))
            for s, t in zip(stages, timings):
                rows[s][f"latency_ms:{device}"] = t.ms
    with tempfile.TemporaryDirectory() as tmp:
        for s in stages_here:
            start = time.time()
            rows[s]["accuracy:onnx"] = accuracy_on(Model.load(folder / f"{s}.onnx"), "fashion-mnist")["accuracy"]
            xml = save_openvino_ir(batch_one(files[s]), Path(tmp) / f"{s}.xml")
            rows[s]["accuracy:ir"] = accuracy_on(Model.load(xml), "fashion-mnist")["accuracy"]
            rows[s]["scoring_seconds"] = time.time() - start
    cpu = make_backend("local-cpu").fingerprint()["cpu"]
    atomic_write_json(
        Path(args.out) / "deployed_runtimes.json",
        {"finalize": str(folder), "cpu": cpu, "runtimes": runtimes, "rows": rows},
    )
    md = [
        f"# A finalized model on two runtimes ({cpu}, 1 thread, batch 1)",
        "",
        f"`python bench/deployed_runtimes.py`: the files of `{folder}`; latency on each runtime in one interleaved "
        f"batch per runtime and precision; accuracy on the Fashion-MNIST test split (10,000 images) through "
        f"`edgenas predict`'s code. Runtimes: {', '.join(runtimes.values())}.",
        "",
        "| file | precision | ONNX Runtime (ms) | OpenVINO (ms) | accuracy: ONNX file (ONNX Runtime) "
        "| accuracy: IR (OpenVINO) |",
        "|---|---|---|---|---|---|",
    ]
    for s, r in rows.items():
        md.append(
            f"| {s} | {r['precision']} | {r['latency_ms:local-cpu']:.3f} | {r['latency_ms:openvino:CPU']:.3f} "
            f"| {r['accuracy:onnx'] * 100:.2f} % | {r['accuracy:ir'] * 100:.2f} % |"
        )
    atomic_write_text(Path(args.out) / "deployed_runtimes.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
