"""Reports: a run's summary, fronts, evidence, compression and provenance; runs compared (plotly HTML/PNG/CSV)."""

from __future__ import annotations

from edgenas.reports._card import model_card_markdown
from edgenas.reports._data import (
    RunFiles,
    accuracy_margin_pts,
    block_breakdown_data,
    candidates_data,
    difference_margin_pts,
    lut_validation_data,
    measurement_info,
    pareto_data,
    placement_data,
    predicted_vs_measured_data,
    provenance_data,
    pruning_data,
    quantization_data,
    search_convergence_data,
    stage_table_data,
    summary_data,
    training_budget_text,
    training_curve_data,
)
from edgenas.reports._report import write_comparison, write_report

__all__ = [
    "RunFiles",
    "accuracy_margin_pts",
    "block_breakdown_data",
    "candidates_data",
    "difference_margin_pts",
    "lut_validation_data",
    "measurement_info",
    "model_card_markdown",
    "pareto_data",
    "predicted_vs_measured_data",
    "provenance_data",
    "pruning_data",
    "placement_data",
    "quantization_data",
    "search_convergence_data",
    "stage_table_data",
    "summary_data",
    "training_budget_text",
    "training_curve_data",
    "write_comparison",
    "write_report",
]
