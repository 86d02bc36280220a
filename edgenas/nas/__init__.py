"""NAS: supernet training (sandwich rule + in-place distillation), subnet evaluation, the Optuna search."""

from __future__ import annotations

from edgenas.nas._evaluate import SubnetEvaluator, accuracy, fold_bn, recalibrate_bn
from edgenas.nas._search import (
    SAMPLERS,
    DeviceObjective,
    SearchConfig,
    device_choice,
    device_front,
    make_storage,
    pareto_rows,
    run_search,
    suggest_arch,
    trial_figures,
    write_results,
)
from edgenas.nas._train import TrainConfig, load_supernet, sandwich_step, set_threads, torch_threads, train_supernet

__all__ = [
    "SAMPLERS",
    "DeviceObjective",
    "SearchConfig",
    "SubnetEvaluator",
    "TrainConfig",
    "accuracy",
    "device_choice",
    "device_front",
    "fold_bn",
    "load_supernet",
    "make_storage",
    "pareto_rows",
    "recalibrate_bn",
    "run_search",
    "sandwich_step",
    "set_threads",
    "torch_threads",
    "suggest_arch",
    "trial_figures",
    "train_supernet",
    "write_results",
]
