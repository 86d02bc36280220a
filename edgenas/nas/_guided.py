"""Predictor-guided evolution as an Optuna sampler: many candidates screened per evaluation.

Evaluating an arch (BN recalibration + a validation pass) is the search's cost; its latency
on every device is a table lookup. So each trial, after ``n_startup`` random ones:

1. fit an accuracy predictor (ridge regression over a one-hot arch encoding) on the
   completed trials; its 5-fold cross-validated error is recorded (``history``);
2. breed ``pool`` candidates from the feasible Pareto front (mutation of one parent, or
   uniform crossover of two, then mutation) and keep those within some device's budgets
   (latency, memory, size: ``feasible``), not yet evaluated;
3. draw a latency cap uniformly over the candidates' latency range and propose the
   candidate of highest predicted accuracy under it, so successive trials spread along the
   front instead of piling onto its accurate end.

Everything else is Optuna's: the proposal is a trial's parameters, so storage, resuming and
several workers on one study work as with any sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from edgenas.search_spaces import Arch, BlockChoice, Space

__all__ = ["PredictorGuidedSampler", "arch_features", "arch_params", "startup_trials"]


def startup_trials(n_trials: int) -> int:
    """Random trials before the predictor is used: a fifth of the budget, 8 to 40."""
    return int(min(40, max(8, n_trials // 5)))


def arch_params(arch: Arch, space: Space, rng: np.random.Generator) -> dict[str, Any]:
    """The trial parameters :func:`edgenas.nas.suggest_arch` reads back as ``arch`` (unused slots random)."""
    params: dict[str, Any] = {"resolution": arch.resolution, "width": arch.width}
    if space.feature_choices:
        params["features"] = arch.features
    for i, (stage, blocks) in enumerate(zip(space.stages, arch.stages)):
        params[f"s{i}_depth"] = len(blocks)
        for j in range(max(stage.depths)):
            b = blocks[j] if j < len(blocks) else None
            params[f"s{i}_b{j}_kernel"] = b.kernel if b else int(rng.choice(stage.kernels))
            params[f"s{i}_b{j}_expand"] = b.expand if b else int(rng.choice(stage.expands))
            params[f"s{i}_b{j}_se"] = b.se if b else bool(rng.choice(stage.se))
    return params


def arch_features(arch: Arch, space: Space) -> np.ndarray:
    """One-hot encoding: resolution, width, classifier hidden width (where a choice), each stage's depth, each used
    block's kernel/expand/SE."""
    out = [r == arch.resolution for r in space.resolutions] + [abs(w - arch.width) < 1e-9 for w in space.widths]
    if space.feature_choices:
        out += [f == arch.features for f in space.feature_options]
    for stage, blocks in zip(space.stages, arch.stages):
        out += [d == len(blocks) for d in stage.depths]
        for j in range(max(stage.depths)):
            b = blocks[j] if j < len(blocks) else None
            out += [b is not None and k == b.kernel for k in stage.kernels]
            out += [b is not None and e == b.expand for e in stage.expands]
            out += [b is not None and se == b.se for se in stage.se]
    return np.array(out, dtype=np.float64)


def _mutate(arch: Arch, space: Space, rng: np.random.Generator, rate: float) -> Arch:
    def pick(current, options):
        return options[rng.integers(len(options))] if rng.random() < rate else current

    stages = []
    for stage, blocks in zip(space.stages, arch.stages):
        depth = pick(len(blocks), list(stage.depths))
        new = []
        for j in range(depth):
            b = blocks[j] if j < len(blocks) else blocks[-1]
            new.append(
                BlockChoice(
                    int(pick(b.kernel, list(stage.kernels))),
                    int(pick(b.expand, list(stage.expands))),
                    bool(pick(b.se, list(stage.se))),
                )
            )
        stages.append(tuple(new))
    return Arch(
        resolution=int(pick(arch.resolution, list(space.resolutions))),
        width=float(pick(arch.width, list(space.widths))),
        stages=tuple(stages),
        features=pick(arch.features, list(space.feature_options)) if space.feature_choices else None,
    )


def _crossover(a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    stages = tuple(sa if rng.random() < 0.5 else sb for sa, sb in zip(a.stages, b.stages))
    return Arch(
        resolution=a.resolution if rng.random() < 0.5 else b.resolution,
        width=a.width if rng.random() < 0.5 else b.width,
        stages=stages,
        features=a.features if a.features == b.features or rng.random() < 0.5 else b.features,
    )


class PredictorGuidedSampler(optuna.samplers.BaseSampler):
    """See the module docstring. ``latency(arch) -> {device: ms}`` comes from the tables, ``feasible(arch)``
    says whether an arch meets all budgets of some device; both are asked again for the same arch, so the
    caller caches them (``run_search`` does)."""

    def __init__(
        self,
        space: Space,
        latency,
        feasible,
        *,
        n_startup: int = 8,
        pool: int = 512,
        mutation_rate: float = 0.15,
        seed: int | None = None,
    ):
        self.space, self.latency, self.feasible = space, latency, feasible
        self.n_startup, self.pool, self.mutation_rate = n_startup, pool, mutation_rate
        self.rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()
        self._alpha: float | None = None  # the predictor's regularisation, chosen by cross-validation
        self.history: list[dict[str, float]] = []  # the predictor's cross-validated error, every 5th fit

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self.rng = np.random.default_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.calculate(study)

    def sample_independent(self, study, trial, param_name, param_distribution):  # Optuna's API
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict[str, Any]:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs]
        if len(done) < self.n_startup or not search_space:
            return {}
        arch = self._propose(done)
        if arch is None:
            return {}
        params = arch_params(arch, self.space, self.rng)
        return {k: v for k, v in params.items() if k in search_space}

    def _propose(self, done: Sequence[FrozenTrial]) -> Arch | None:
        archs = [self.space.parse(t.user_attrs["arch"]) for t in done]
        acc = np.array([t.values[0] for t in done])
        model = self._fit(np.stack([arch_features(a, self.space) for a in archs]), acc)
        seen = {str(a) for a in archs}
        parents = self._front(archs, acc) or archs
        candidates: dict[str, tuple[Arch, float]] = {}
        for _ in range(self.pool):
            p = parents[self.rng.integers(len(parents))]
            if self.rng.random() < 0.5 and len(parents) > 1:
                p = _crossover(p, parents[self.rng.integers(len(parents))], self.rng)
            child = _mutate(p, self.space, self.rng, self.mutation_rate)
            key = str(child)
            if key in seen or key in candidates:
                continue
            if self.feasible(child):
                candidates[key] = (child, min(self.latency(child).values()))
        if not candidates:
            return None
        cand = list(candidates.values())
        lat = np.array([c[1] for c in cand])
        pred = model.predict(np.stack([arch_features(c[0], self.space) for c in cand]))
        cap = self.rng.uniform(lat.min(), lat.max())
        pred[lat > cap] = -np.inf
        return cand[int(np.argmax(pred))][0]

    def _front(self, archs: list[Arch], acc: np.ndarray) -> list[Arch]:
        """The feasible archs no other feasible arch beats on both accuracy and (fastest device's) latency."""
        ok = [i for i in range(len(archs)) if self.feasible(archs[i])]
        fast = {i: min(self.latency(archs[i]).values()) for i in ok}
        return [
            archs[i]
            for i in ok
            if not any(acc[j] >= acc[i] and fast[j] <= fast[i] and (acc[j] > acc[i] or fast[j] < fast[i]) for j in ok)
        ]

    def _fit(self, x: np.ndarray, y: np.ndarray):
        """Ridge regression; its regularisation (and its cross-validated error) re-chosen every 5th fit."""
        from scipy.stats import kendalltau
        from sklearn.linear_model import Ridge, RidgeCV
        from sklearn.model_selection import cross_val_predict

        if self._alpha is not None and len(y) % 5:
            return Ridge(alpha=self._alpha).fit(x, y)
        model = RidgeCV(alphas=np.logspace(-3, 2, 12))
        if len(y) >= 10:  # the predictor's own held-out error, as the search goes
            held = cross_val_predict(model, x, y, cv=5)
            tau = kendalltau(held, y)[0]
            self.history.append(
                {
                    "trials": len(y),
                    "mae": float(np.mean(np.abs(held - y))),
                    "kendall_tau": float(tau) if tau == tau else 0.0,
                }
            )
        model.fit(x, y)
        self._alpha = float(model.alpha_)
        return model
