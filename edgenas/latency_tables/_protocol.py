"""The timing protocol for noisy, drifting machines. Needs only numpy and the runtime that runs the models.

One call times a batch of ONNX models together with a fixed reference model:

1. every model gets its own session and a warm-up; its warm-up median sets how many runs
   make one turn of about ``turn_ms`` (so a 50 us block and a 5 ms network get the same
   share of the clock);
2. ``rounds`` rounds follow; in each, every model (reference included) takes one turn,
   in a freshly shuffled order, each run timed on its own after ``turn_warmup`` untimed
   runs. Interleaving spreads the machine's drift over all models alike; the untimed run
   reloads the model's weights into the cache the other models evicted, as a user timing
   one file in a loop has them (without it, ExecuTorch networks of 1-2 ms, 2 runs a turn,
   read up to 12-14 % slower relative to the reference than when timed alone);
3. a model's latency is a low quantile of all its runs (``quantile``; low quantiles track
   the undisturbed cost, medians pick up other tenants' bursts), its spread the relative
   inter-quartile range of the per-round quantiles, and its latency relative to the
   reference the median over rounds of (model / reference) in the same round, so a slow
   minute of the machine cancels out.

The fixed cost of one runtime call is measured with a model that does nothing (an
Identity on one float) in every batch, like the reference. The models run through a
:class:`~edgenas.latency_tables.Runtime` (ONNX Runtime unless another is given).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgenas.latency_tables._runtimes import OnnxRuntime, Runtime

__all__ = ["Protocol", "Timing", "noop_model", "time_models"]


@dataclass(frozen=True)
class Protocol:
    """How a batch of models is timed (see the module docstring)."""

    warmup: int = 10
    rounds: int = 15
    turn_ms: float = 3.0
    max_runs_per_turn: int = 50
    quantile: float = 0.1
    turn_warmup: int = 1  # tables of earlier versions were timed without (0)

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.rounds < 3 or self.max_runs_per_turn < 1 or self.turn_warmup < 0:
            raise ValueError(
                f"protocol needs warmup >= 1, rounds >= 3, max_runs_per_turn >= 1, turn_warmup >= 0: {self}"
            )
        if not 0.0 <= self.quantile <= 0.5:
            raise ValueError(f"protocol quantile must be in [0, 0.5], got {self.quantile}")
        if self.turn_ms <= 0:
            raise ValueError(f"protocol turn_ms must be > 0, got {self.turn_ms}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    """The latency of one model: ``ms`` (the protocol's quantile), dispersion and run count."""

    ms: float
    rel: float  # latency relative to the batch's reference model, per-round median ratio
    spread: float  # relative IQR of the per-round quantiles
    runs: int


# The smallest model a runtime will run: Identity on one float (opset 17, IR 8), serialised.
# Kept as bytes so that the device side needs no onnx package to build it;
# tests/latency_tables/test_protocol.py checks it against the model onnx's helpers build.
_NOOP_MODEL = base64.b64decode(
    "CAg6TAoZCgVpbnB1dBIGb3V0cHV0IghJZGVudGl0eRIEbm9vcFoTCgVpbnB1dBIKCggIARIECgIIAWIUCgZvdXRwdXQSCgoICAESBAoCCAFCBAoAEBE="
)


def noop_model() -> bytes:
    """The smallest model ONNX Runtime will run: Identity on one float (per-call overhead)."""
    return _NOOP_MODEL


def _warm_up(run, protocol: Protocol) -> int:
    """Run ``protocol.warmup`` times; how many runs make one turn of about ``protocol.turn_ms``."""
    samples = []
    for _ in range(protocol.warmup):
        t0 = time.perf_counter_ns()
        run()
        samples.append(time.perf_counter_ns() - t0)
    est_ms = float(np.median(samples)) / 1e6
    return int(np.clip(round(protocol.turn_ms / max(est_ms, 1e-3)), 1, protocol.max_runs_per_turn))


def time_models(
    models: Sequence[bytes],
    reference: bytes,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int = 1,
    protocol: Protocol = Protocol(),
    seed: int = 0,
    runtime: Runtime | None = None,
    noop: bytes | None = None,
) -> tuple[list[Timing], Timing, Timing]:
    """Time ``models`` interleaved with ``reference`` and a no-op model.

    ``runtime`` runs them (default: ONNX Runtime with ``providers`` and ``threads``); every
    model is in its format, the no-op too (``noop``: ONNX's :func:`noop_model` by default).
    Returns (timings of ``models`` in order, timing of the reference, timing of the no-op).
    Raises whatever the runtime raises for a model it cannot load or run.
    """
    runtime = runtime or OnnxRuntime(providers, threads)
    if noop is None and runtime.format != "onnx":
        raise ValueError(f"{runtime.name} runs {runtime.format} models: pass the no-op model in that format")
    runners = [runtime.load(m) for m in (reference, noop or noop_model(), *models)]
    perf = time.perf_counter_ns
    runs_per_turn = [_warm_up(run, protocol) for run in runners]
    rng = np.random.default_rng(seed)
    n = len(runners)
    per_round = np.zeros((protocol.rounds, n))
    everything: list[list[float]] = [[] for _ in range(n)]
    for r in range(protocol.rounds):
        for i in rng.permutation(n):
            run = runners[i]
            for _ in range(protocol.turn_warmup):
                run()
            samples = np.empty(runs_per_turn[i])
            for j in range(runs_per_turn[i]):
                t0 = perf()
                run()
                samples[j] = perf() - t0
            samples /= 1e6
            everything[i].extend(samples.tolist())
            per_round[r, i] = np.quantile(samples, protocol.quantile)

    ratios = per_round / per_round[:, :1]
    timings = []
    for i in range(n):
        q25, q50, q75 = np.quantile(per_round[:, i], [0.25, 0.5, 0.75])
        timings.append(
            Timing(
                ms=float(np.quantile(everything[i], protocol.quantile)),
                rel=float(np.median(ratios[:, i])),
                spread=float((q75 - q25) / q50) if q50 > 0 else 0.0,
                runs=len(everything[i]),
            )
        )
    return timings[2:], timings[0], timings[1]
