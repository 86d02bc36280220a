"""Peak memory of an ONNX Runtime session, measured in a fresh process that imports only onnxruntime and numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

__all__ = ["session_peak_memory_mb"]

_CHILD = r"""
import json, resource, sys
import numpy as np
import onnxruntime as ort
path, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
providers = json.loads(sys.argv[4])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

try:  # Linux: reset the high-water mark to the current RSS, so imports do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, peak_key = status("VmRSS"), "VmHWM"
except OSError:
    before, peak_key = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
so = ort.SessionOptions()
so.intra_op_num_threads = threads
sess = ort.InferenceSession(path, so, providers=providers)
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
for _ in range(runs):
    out = sess.run(None, {inp.name: x})
after = status(peak_key) if peak_key else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
foreign = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "edgenas"))
print(json.dumps({"peak_mb": (after - before) / 1024.0, "modules": foreign}))
"""


def session_peak_memory_mb(
    model: bytes, *, threads: int = 1, runs: int = 10, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> float:
    """Peak resident memory (MB) that creating a session and running it ``runs`` times adds.

    Measured in a child process that imports nothing but onnxruntime and numpy, as on a
    device: the high-water mark (VmHWM) is reset after the imports through
    /proc/self/clear_refs, so the figure is the session's own peak over the process's
    resident memory before it (KiB on Linux, converted to MB).
    """
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        f.write(model)
        path = f.name
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, path, str(threads), str(runs), json.dumps(list(providers))],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["modules"]:
        raise AssertionError(f"the memory probe imported {result['modules']}")
    return float(result["peak_mb"])
