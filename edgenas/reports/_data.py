"""The data behind every report figure, read from a run directory (no drawing here).

Each function returns a pandas DataFrame (or a dict for tables of figures), which the
report draws and also writes as CSV so any figure can be redrawn elsewhere.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from edgenas.io import read_json
from edgenas.latency_tables import LatencyTable
from edgenas.layout import STAGE_COLUMNS, Front, ModelCard, RunLayout
from edgenas.metrics import hypervolume

__all__ = [
    "RunFiles",
    "accuracy_margin_pts",
    "block_breakdown_data",
    "difference_margin_pts",
    "candidates_data",
    "lut_validation_data",
    "measurement_info",
    "pareto_data",
    "placement_data",
    "provenance_data",
    "pruning_data",
    "quantization_data",
    "summary_data",
    "predicted_vs_measured_data",
    "search_convergence_data",
    "stage_table_data",
    "training_budget_text",
    "training_curve_data",
]


class RunFiles:
    """The files of a run directory that the report reads (where each lives: :class:`~edgenas.layout.RunLayout`)."""

    def __init__(self, run_dir: str | Path):
        self.run = Path(run_dir)
        cfg = RunLayout(self.run).resolved_config
        if not cfg.exists():
            raise FileNotFoundError(f"{str(self.run)!r} is not an edgenas run directory (no config.resolved.yaml)")
        self.config: dict[str, Any] = yaml.safe_load(cfg.read_text())
        self.devices = [d["name"] for d in self.config["devices"]]
        self.layout = RunLayout(self.run, {d["name"]: d.get("lut") for d in self.config["devices"]})
        self._tables: dict[str, LatencyTable | None] = {}  # several figures read each table: load it once

    def table(self, device: str) -> LatencyTable | None:
        if device not in self._tables:
            path = self.layout.lut(device)
            self._tables[device] = LatencyTable.load(path) if path.exists() else None
        return self._tables[device]

    def validation_rows(self, device: str) -> list[dict]:
        path = self.layout.lut_validation(device)
        return read_json(path)["rows"] if path.exists() else []

    def trials(self) -> pd.DataFrame:
        path = self.layout.trials
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    @functools.cached_property
    def search_results(self) -> Front | None:
        """The search's results file (``pareto.json``), read once; None before the search."""
        return Front.load(self.layout.front) if self.layout.front.exists() else None

    def front(self, device: str | None = None) -> list[dict]:
        """The search's Pareto set, or ``device``'s own front (accuracy vs its latency, within its budget)."""
        return self.search_results.rows(device) if self.search_results else []

    def references(self) -> list[dict]:
        path = self.layout.references
        return read_json(path) if path.exists() else []

    def training(self) -> dict | None:
        """The supernet's training budget and per-epoch history, if the run trained one."""
        path = self.layout.training
        return read_json(path) if path.exists() else None

    def precision(self, device: str) -> str:
        """The precision of ``device``'s table (what its RAM and flash budgets bound)."""
        return next(d.get("precision", "fp32") for d in self.config["devices"] if d["name"] == device)

    def budgets(self, device: str) -> dict[str, float]:
        """``device``'s budgets: ``budget_ms`` (as set, or resolved from ``budget_of``), ``ram_kb``, ``flash_kb``."""
        d = next(x for x in self.config["devices"] if x["name"] == device)
        out = {k: d[k] for k in ("budget_ms", "ram_kb", "flash_kb") if d.get(k) is not None}
        resolved = (self.search_results.budgets(device) or {}) if self.search_results else {}
        if "budget_ms" not in out and f"latency_ms:{device}" in resolved:
            out["budget_ms"] = resolved[f"latency_ms:{device}"]
        return out

    def card(self, device: str) -> dict | None:
        path = self.layout.model_card(device)
        return ModelCard.load(path).data if path.exists() else None

    def searched_row(self, arch: str) -> dict | None:
        """The search's trial of ``arch`` (supernet val accuracy, predicted latency), if the search scored it."""
        trials = self.trials()
        rows = trials[trials["arch"] == arch].to_dict("records") if len(trials) else []
        return rows[0] if rows else None


def deployed_stage(card: dict) -> str | None:
    """The stage whose file finalize deployed: ``qat_int8``, ``pruned`` or None (no export passed its checks)."""
    return ModelCard(card).deployed_stage


def training_curve_data(run: RunFiles) -> pd.DataFrame:
    """Per epoch: validation accuracy of the largest and smallest subnet, losses, speed."""
    training = run.training()
    cols = ["epoch", "val_largest", "val_smallest", "loss_largest", "loss_students", "images_per_second"]
    if not training:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame([{k: h.get(k) for k in cols} for h in training["history"]])


def training_budget_text(run: RunFiles) -> str:
    """One sentence: what the supernet was trained on, how long, where."""
    training = run.training()
    if not training:
        return "No supernet training record in this run directory."
    b, last = training["budget"], training["history"][-1]
    compute = last.get("compute", {})
    limit = " (data.train_limit)" if b.get("train_limit") else ""
    return (
        f"Supernet trained for {b['epochs']} epochs on {b['train_images']:,} training images{limit}, "
        f"augmentation {', '.join(b['augment']) or 'none'}, on {compute.get('name', '?')} "
        f"({compute.get('device', '?')}, {compute.get('precision', '?')}); final validation accuracy "
        f"{last['val_largest'] * 100:.1f} % (largest subnet), {last['val_smallest'] * 100:.1f} % (smallest), "
        f"{sum(h['seconds'] for h in training['history']) / 60:.1f} minutes."
    )


def pareto_data(run: RunFiles, device: str) -> pd.DataFrame:
    """Accuracy vs latency on ``device``: all trials, the front, references, the finalized model."""
    key, p = f"latency_ms:{device}", run.precision(device)
    rows = []
    trials = run.trials()
    front = {r["arch"] for r in run.front(device)}
    for r in trials.to_dict("records") if len(trials) else []:
        within = r.get(f"within_budget:{device}", r.get("feasible", True))
        kind = "pareto front" if r["arch"] in front else ("trial" if within else "trial (over budget)")
        rows.append(
            {
                "kind": kind,
                "arch": r["arch"],
                "accuracy": r["accuracy"],
                "latency_ms": r[key],
                "ram_kb": r.get(f"ram_kb:{p}"),
                "flash_kb": r.get(f"flash_kb:{p}"),
                "latency_source": "predicted",
                "accuracy_source": "supernet, val",
            }
        )
    for r in run.references():
        rows.append(
            {
                "kind": "MobileNetV3 reference",
                "arch": r["arch"],
                "accuracy": r["accuracy"],
                "latency_ms": r[key],
                "latency_source": "predicted",
                "accuracy_source": "supernet, val",
                "name": r["name"],
            }
        )
    card = run.card(device)
    stage = deployed_stage(card) if card else None  # None: no export passed its checks
    if stage:
        final = next(s for s in card["stages"] if s["stage"] == stage)
        rows.append(
            {
                "kind": "finalized",
                "arch": card["arch"],
                "accuracy": final["test_accuracy"],
                "latency_ms": final["latency_ms"],
                "latency_source": "measured",
                "accuracy_source": f"{card['chosen_precision']} model, test",
            }
        )
    return pd.DataFrame(rows)


def candidates_data(run: RunFiles, device: str) -> pd.DataFrame:
    """``device``'s front as candidates side by side: accuracy, latency, RAM and flash at fp32 and int8.

    RAM is the predicted peak activation memory at batch 1, flash the predicted model file
    (kB of 1024 bytes); latency is the device table's prediction at its own precision.
    """
    cols = [
        "arch",
        "val_accuracy_pct",
        "latency_ms",
        "ram_kb_fp32",
        "ram_kb_int8",
        "flash_kb_fp32",
        "flash_kb_int8",
        "params",
        "mmacs",
    ]
    rows = []
    for r in run.front(device):
        if "ram_kb:fp32" not in r:  # a search of an earlier version recorded latency only
            return pd.DataFrame(columns=cols)
        rows.append(
            {
                "arch": r["arch"],
                "val_accuracy_pct": r["accuracy"] * 100,
                "latency_ms": r[f"latency_ms:{device}"],
                **{f"{k}_{p}": r[f"{k}:{p}"] for k in ("ram_kb", "flash_kb") for p in ("fp32", "int8")},
                "params": r["params"],
                "mmacs": r["flops"] / 1e6,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def search_convergence_data(run: RunFiles, slowest_ms: dict[str, float] | None = None) -> pd.DataFrame:
    """After each trial, the hypervolume of each device's front; the guided sampler's predictor error.

    Hypervolume of (1 - val accuracy, latency / (1.05 x the slowest trial's)) over the trials
    within the device's budget, reference point (1, 1): 0 is nothing found, 1 unreachable.
    ``slowest_ms`` (device -> ms) replaces each device's slowest trial, so that runs compared
    share one scale. The predictor's error: its 5-fold cross-validated mean absolute error
    (accuracy points).
    """
    trials, rows = run.trials(), []
    if len(trials):
        trials = trials.sort_values("trial")
        for device in run.devices:
            key = f"latency_ms:{device}"
            ok = trials.get(f"within_budget:{device}", pd.Series(True, index=trials.index)).astype(bool)
            scale = (slowest_ms or {}).get(device, trials[key].max())
            pts = np.column_stack([1.0 - trials["accuracy"], trials[key] / (1.05 * scale)])
            for n in range(1, len(trials) + 1):
                rows.append(
                    {"trials": n, "series": f"hypervolume ({device})", "value": hypervolume(pts[:n][ok.to_numpy()[:n]])}
                )
    for path in run.layout.predictor_histories():
        for h in read_json(path)["history"]:
            rows.append(
                {
                    "trials": h["trials"],
                    "series": f"predictor error ({path.stem.split('_')[1]})",
                    "value": h["mae"] * 100,
                }
            )
    return pd.DataFrame(rows, columns=["trials", "series", "value"])


def predicted_vs_measured_data(run: RunFiles, device: str) -> pd.DataFrame:
    """Validation subnets and the finalized model's exports (their table's precision): predicted vs measured ms."""
    rows = [
        {
            "arch": r["arch"],
            "predicted_ms": r["predicted_ms"],
            "measured_ms": r["measured_ms"],
            "set": f"validation ({r['split']})",
        }
        for r in run.validation_rows(device)
    ]
    card = run.card(device)
    if card and card.get("predicted_ms") is not None:
        by = {s["stage"]: s for s in card["stages"]}
        precision = card["predicted_precision"]
        for stage, predicted in card.get("predicted_stage_ms", {}).items():  # older cards: none
            pruned = stage not in ("searched", "distilled")
            estimated = " estimated" if pruned and card["predicted_pruned_estimated"] else ""
            rows.append(
                {
                    "arch": card["arch"],
                    "predicted_ms": predicted,
                    "measured_ms": by[stage]["latency_ms"],
                    "set": f"finalized {stage} ({precision} table{estimated})",
                }
            )
    return pd.DataFrame(rows)


def block_breakdown_data(run: RunFiles, device: str) -> pd.DataFrame:
    """Per-block predicted latency of the finalized arch (before pruning)."""
    from edgenas.latency_tables import Predictor
    from edgenas.search_spaces import Arch

    card, table = run.card(device), run.table(device)
    if not card or table is None:
        return pd.DataFrame(columns=["block", "key", "ms"])
    predictor = Predictor(table)
    rows = [{"block": i, "key": k, "ms": ms} for i, (k, ms) in enumerate(predictor.breakdown(Arch.parse(card["arch"])))]
    return pd.DataFrame(rows)


def stage_table_data(run: RunFiles, device: str) -> pd.DataFrame:
    card = run.card(device)
    if not card:
        return pd.DataFrame()
    return pd.DataFrame(ModelCard(card).stage_rows(), columns=list(STAGE_COLUMNS))


def lut_validation_data(run: RunFiles) -> pd.DataFrame:
    rows = []
    for device in run.devices:
        t = run.table(device)
        if t is None or not t.validation:
            continue
        m = t.validation["heldout"]
        rows.append(
            {
                "device": device,
                "precision": t.header["precision"],
                "entries": len(t.entries),
                "heldout": m["n"],
                "within_5pct": m["within_5pct"],
                "within_10pct": m["within_10pct"],
                "mape_pct": m["mape_pct"],
                "kendall_tau": m["kendall_tau"],
                "calibration": " + ".join(
                    f"{c:.3g}*{f}" for f, c in zip(t.calibration["features"], t.calibration["coef"])
                ),
            }
        )
    return pd.DataFrame(rows)


def measurement_info(run: RunFiles) -> list[dict[str, Any]]:
    out = []
    for device in run.devices:
        t = run.table(device)
        if t is None:
            continue
        h = t.header
        out.append(
            {
                "device": device,
                "backend": h["device"],
                "cpu": h["cpu"],
                "os": h["fingerprint"]["os"],
                "providers": ", ".join(h["providers"]),
                "threads": h["threads"],
                "precision": h["precision"],
                "runtime": h["runtime"],
                "onnxruntime": h["onnxruntime"],
                "opset": h["opset"],
                "batch": h["batch"],
                "protocol": h["protocol"],
                "reference_ms": h["reference_ms"],
                "per_call_overhead_us": h["noop_ms"] * 1000,
                "build_seconds": h["build_seconds"],
                "drift": h.get("drift"),
            }
        )
    return out


def summary_data(run: RunFiles, device: str) -> dict[str, Any] | None:
    """What ``device`` got: the deployed file and its figures, against the teacher and the nearest MobileNetV3.

    The teacher comparison uses finalize's measurements (test split, one interleaved timing
    batch). The MobileNetV3 comparison is the search's: the searched arch and the nearest
    reference layout by predicted latency, both scored by the supernet on validation images
    and by the device's table (stand-alone training is ``bench/references.py``'s).
    """
    card = run.card(device)
    stage = deployed_stage(card) if card else None
    if stage is None:
        return None
    by = {s["stage"]: s for s in card["stages"]}
    final, teacher = by[stage], by["teacher"]
    dep = card["deployed"]
    accuracy = dep.get("test_accuracy", final["test_accuracy"])
    row = {
        "device": device,
        "arch": card["arch"],
        "file": dep["file"],
        "runtime": dep["runtime"],
        "precision": card["chosen_precision"],
        "test_accuracy": accuracy,
        "latency_ms": final["latency_ms"],
        "size_mb": final["size_mb"],
        "peak_memory_mb": final["peak_memory_mb"],
        "activation_kb": final.get("activation_kb"),
        "teacher_accuracy": teacher["test_accuracy"],
        "teacher_latency_ms": teacher["latency_ms"],
        "teacher_size_mb": teacher["size_mb"],
        "accuracy_change_pts": (accuracy - teacher["test_accuracy"]) * 100,
        "speedup_vs_teacher": teacher["latency_ms"] / final["latency_ms"],
        "size_vs_teacher": final["size_mb"] / teacher["size_mb"],
    }
    row.update(_nearest_reference(run, device, card["arch"]))
    sizes = card.get("data_sizes") or {}
    row["test_images"] = sizes.get("test")
    row["test_margin_pts"] = accuracy_margin_pts(accuracy, row["test_images"])
    row["teacher_margin_pts"] = difference_margin_pts(accuracy, teacher["test_accuracy"], row["test_images"])
    if row["reference"]:
        val_images = min(filter(None, [sizes.get("val"), run.config.get("search", {}).get("val_images")]), default=None)
        row["reference_images"] = val_images
        row["reference_margin_pts"] = difference_margin_pts(
            row["searched_val_accuracy"], row["reference_val_accuracy"], val_images
        )
    row["sentence"] = _summary_sentence(row)
    return row


def accuracy_margin_pts(accuracy: float, images: int | None) -> float | None:
    """Half the 95 % interval of an accuracy measured on ``images`` images, in points: 1.96 x the binomial
    standard error (sampling noise of the split alone; a second training run adds its own)."""
    if not images:
        return None
    return 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1 / images) / images) * 100


def difference_margin_pts(a: float, b: float, images: int | None) -> float | None:
    """Half the 95 % interval of the difference of two accuracies, each on ``images`` images (taken as
    independent: conservative for two models scored on the same images)."""
    ma, mb = accuracy_margin_pts(a, images), accuracy_margin_pts(b, images)
    return None if ma is None or mb is None else math.hypot(ma, mb)


def _nearest_reference(run: RunFiles, device: str, arch: str) -> dict[str, Any]:
    searched, key = run.searched_row(arch), f"latency_ms:{device}"
    refs = [r for r in run.references() if key in r]
    if searched is None or not refs:
        return {"reference": None}
    ref = min(refs, key=lambda r: abs(r[key] - searched[key]))
    return {
        "reference": ref["name"],
        "reference_val_accuracy": ref["accuracy"],
        "reference_predicted_ms": ref[key],
        "searched_val_accuracy": searched["accuracy"],
        "searched_predicted_ms": searched[key],
    }


def _change(pts: float, margin: float | None, what: str) -> str:
    """A difference of accuracies in words; one inside its uncertainty is not called a gain or a loss."""
    if margin is None:
        return f"differs by {pts:+.2f} pt of {what} (uncertainty unknown: an older model card)"
    if abs(pts) <= margin:
        return (
            f"differs by {pts:+.2f} pt of {what}, within the ±{margin:.2f} pt the split's size allows: "
            "no measurable change"
        )
    verb = "gains" if pts > 0 else "gives up"
    return f"{verb} {abs(pts):.2f} pt of {what} (±{margin:.2f} pt)"


def _summary_sentence(r: dict[str, Any]) -> str:
    margin = f" ±{r['test_margin_pts']:.2f} pt ({r['test_images']:,} images)" if r["test_margin_pts"] else ""
    text = (
        f"{r['file']} ({r['precision']}, {r['runtime']}) runs in {r['latency_ms']:.3f} ms at "
        f"{r['test_accuracy'] * 100:.2f} %{margin} test accuracy: against the teacher it "
        f"{_change(r['accuracy_change_pts'], r['teacher_margin_pts'], 'test accuracy')} for a "
        f"{r['speedup_vs_teacher']:.1f}x speed-up and a file {1 / r['size_vs_teacher']:.1f}x smaller."
    )
    if r["reference"]:
        gain = (r["searched_val_accuracy"] - r["reference_val_accuracy"]) * 100
        ratio = r["searched_predicted_ms"] / r["reference_predicted_ms"]
        images = f" on {r['reference_images']:,} validation images" if r.get("reference_images") else ""
        text += (
            f" Against {r['reference']}, the MobileNetV3 layout nearest in predicted latency, the searched "
            f"arch {_change(gain, r.get('reference_margin_pts'), 'supernet accuracy' + images)} at {ratio:.2f}x its "
            "predicted latency (both scored by the supernet: a stand-alone comparison is bench/references.py's)."
        )
    return text


def pruning_data(run: RunFiles, device: str) -> pd.DataFrame:
    """Output channels of every convolution before and after pruning (before: cards from this version on)."""
    card = run.card(device)
    if not card:
        return pd.DataFrame(columns=["layer", "before", "after"])
    after = card["pruned_channels"]
    before = card.get("searched_channels") or [None] * len(after)
    return pd.DataFrame({"layer": [f"conv {i}" for i in range(len(after))], "before": before, "after": after})


def placement_data(run: RunFiles, device: str) -> pd.DataFrame:
    """Which kernels ran the fp32 and int8 candidates (the card's placement): a row per candidate."""
    card = run.card(device)
    rows = []
    for stage, p in ((card or {}).get("placement") or {}).items():
        s = p["summary"]
        total = s["total_us"] or 0.0
        rows.append(
            {
                "stage": stage,
                "nodes": s["nodes"],
                "executed_by": ", ".join(f"{k} ({v['nodes']})" for k, v in s["by_executor"].items()),
                "fallbacks": len(s["fallbacks"]),
                "fallback_nodes": "; ".join(s["fallbacks"][:3]) + (" ..." if len(s["fallbacks"]) > 3 else ""),
                "float_nodes_in_int8": s["float_nodes_in_int8"],
                "conversion_share": s["conversion_us"] / total if s["timed"] and total else None,
                "costliest": ", ".join(f"{op} {us / total * 100:.0f} %" for op, us in s["costliest_ops"][:3])
                if total
                else "",
            }
        )
    return pd.DataFrame(rows)


def quantization_data(run: RunFiles, device: str) -> pd.DataFrame:
    """The pruned fp32 model and its int8 versions (QAT, PTQ) the device ran: accuracy, latency, size."""
    card = run.card(device)
    if not card:
        return pd.DataFrame()
    by = {s["stage"]: s for s in card["stages"]}
    base = by["pruned"]
    rows = []
    for stage, method in (("pruned", "fp32 (pruned)"), ("qat_int8", "int8, QAT"), ("ptq_int8", "int8, PTQ")):
        if stage not in by:  # a runtime without int8 models (ncnn)
            continue
        s = by[stage]
        rows.append(
            {
                "model": method,
                "file": s.get("file", f"{stage}.onnx"),
                "test_accuracy": s["test_accuracy"],
                "accuracy_vs_fp32_pts": (s["test_accuracy"] - base["test_accuracy"]) * 100,
                "latency_ms": s["latency_ms"],
                "speedup_vs_fp32": base["latency_ms"] / s["latency_ms"],
                "size_mb": s["size_mb"],
            }
        )
    return pd.DataFrame(rows)


def provenance_data(run: RunFiles) -> pd.DataFrame:
    """Where and how every figure was made, as (what, value) rows: run, seeds, software, each device."""
    c = run.config
    rows = [
        ("run directory", str(run.run)),
        ("space", str(c.get("space"))),
        (
            "data",
            f"{c['data']['name']} (split seed {c['data'].get('seed', 0)}, "
            f"validation {c['data'].get('val_fraction')}, test {c['data'].get('test_fraction')}, "
            f"training images limited to {c['data'].get('train_limit') or 'none'})",
        ),
        ("seeds", ", ".join(f"{k} {c[k]['seed']}" for k in ("train", "search", "finalize") if k in c)),
        (
            "search",
            "{sampler} sampler, {n_trials} trials, {calib_batches} BatchNorm batches, {val_images} "
            "validation images per trial".format(**c["search"]),
        ),
    ]
    training = run.training()
    if training:
        comp = training["history"][-1].get("compute", {})
        where = f"{comp.get('name', '?')} ({comp.get('device', '?')}, {comp.get('precision', '?')})"
        rows.append(("supernet training", f"{where}, torch {comp.get('torch', '?')}"))
    for d in measurement_info(run):
        rows += [
            (f"{d['device']}: device", f"{d['cpu']}, {d['os']}"),
            (
                f"{d['device']}: runtime",
                f"{d['runtime']}, devices {d['providers']}, {d['threads']} thread(s), ONNX opset {d['opset']}",
            ),
            (
                f"{d['device']}: table",
                f"{d['precision']}, batch {d['batch']}, reference model "
                f"{d['reference_ms']:.3f} ms, per-call overhead "
                f"{d['per_call_overhead_us']:.1f} us, built in {d['build_seconds']:.0f} s",
            ),
            (f"{d['device']}: protocol", ", ".join(f"{k} {v}" for k, v in d["protocol"].items())),
        ]
    for device in run.devices:
        card = run.card(device)
        if card:
            v = card.get("versions", {})
            rows.append(
                (
                    f"{device}: finalize",
                    f"on {card['compute'].get('name', '?')} "
                    f"({card['compute'].get('device', '?')}), " + ", ".join(f"{k} {x}" for k, x in v.items()),
                )
            )
    return pd.DataFrame(rows, columns=["what", "value"])
