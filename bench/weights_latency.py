"""Does ONNX Runtime's time depend on the weights' values? The check behind ``bench/references.py`` timing a
reference as its layout with fresh weights where its trained file is not on the machine.

Each deployed fp32 file of ``bench/results/fashion-mnist/`` is timed beside itself with every float weight
replaced by random values of the same scale, in ``--batches`` interleaved batches (ONNX Runtime, 1 thread,
batch 1); the ratio of the medians is printed.

    python bench/weights_latency.py      # about a minute
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgenas.latency_tables import LocalBackend, Protocol, reference_model


def rerandomised(path: Path) -> bytes:
    """The file with each float weight tensor replaced by normal noise of its own standard deviation."""
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 1:
            fresh = (rng.standard_normal(a.shape) * (a.std() or 1.0)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(fresh, init.name))
    return model.SerializeToString()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=5)
    args = p.parse_args()
    files = sorted(Path("bench/results/fashion-mnist").glob("*/pruned.onnx"))
    models = [m for f in files for m in (f.read_bytes(), rerandomised(f))]
    backend = LocalBackend(threads=1)
    runs = [backend.measure(models, reference_model("fp32"), Protocol(rounds=30))[0] for _ in range(args.batches)]
    for i, f in enumerate(files):
        trained = statistics.median(r[2 * i].ms for r in runs)
        fresh = statistics.median(r[2 * i + 1].ms for r in runs)
        print(f"{f}: trained {trained:.4f} ms, fresh weights {fresh:.4f} ms, ratio {fresh / trained:.3f}")


if __name__ == "__main__":
    main()
