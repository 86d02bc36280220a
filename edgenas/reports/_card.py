"""The model card in Markdown: what was deployed and why, the checks, and the stage table."""

from __future__ import annotations

from typing import Any

from edgenas.layout import ModelCard

__all__ = ["model_card_markdown"]


def model_card_markdown(card: dict[str, Any]) -> str:
    """``model_card.md``: the deployed file, its device and runtime, the teacher, predictions, QAT, checks, stages."""
    lines = [
        f"# Model card: `{card['arch']}`",
        "",
        f"- space `{card['space']}`, device `{card['device']}` ({card['device_fingerprint'].get('cpu', '')}, "
        f"{card['device_fingerprint'].get('runtime', 'onnxruntime ' + card['versions']['onnxruntime'])}, "
        f"{card['device_fingerprint'].get('threads')} thread(s))",
        f"- deploy: **{card['chosen_model'] or 'nothing'}** ({card['chosen_precision'] or '-'}): {card['why']}",
    ]
    dep = card.get("deployed") or {}
    if dep.get("file"):
        lines.append(
            f"- deployed file: `{dep['file']}` for {dep['runtime']} on {', '.join(dep['device'] or [])}, "
            f"{dep['precision']}, test accuracy {dep['test_accuracy'] * 100:.2f} % "
            + (f"scored by {dep['scored_by']}" if dep.get("scored_by") else "as that runtime runs it")
        )
    clean = ModelCard(card).teacher_logits == "clean"
    how = " (its logits of the un-augmented training images, computed once, taught every finetune)" if clean else ""
    lines.append(f"- teacher: {card.get('teacher', 'largest subnet')}{how}")
    if card.get("predicted_ms") is not None:
        vs = ", ".join(f"`{k}` {v:.3f} ms" for k, v in card["predicted_stage_ms"].items())
        lines.append(
            f"- predicted latency ({card['predicted_precision']} table) of the searched arch: "
            f"{card['predicted_ms']:.3f} ms; of each export: {vs}"
            + (" (pruned blocks estimated)" if card["predicted_pruned_estimated"] else "")
            + (f"; **{card['predicted_extrapolated']}**" if card.get("predicted_extrapolated") else "")
        )
    lines += _training_lines(card)
    choice = card.get("qat_choice") or {}  # absent in cards written before finalize.qat
    if choice.get("setting") == "auto" or not choice.get("run", True):
        lines.append(f"- quantization-aware training (`finalize.qat: {choice['setting']}`): {choice['why']}")
    if card.get("qat_epochs"):
        lines.append(f"- QAT: {_curve(card['qat_epochs'])} (epoch 0: calibrated only)")
    lines += [
        _checks_line(card["checks"]),
        "",
        "| stage | precision | size (MB) | latency (ms) | peak memory (MB) | test accuracy | size vs teacher "
        "| speed-up vs teacher | memory vs teacher | flash kB (predicted) | RAM kB (predicted) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ModelCard(card).stage_rows():
        lines.append(
            f"| {r['stage']} | {r['precision']} | {r['size_mb']:.3f} | {r['latency_ms']:.3f} | "
            f"{r['peak_memory_mb']:.1f} | {r['test_accuracy'] * 100:.2f} % | {r['size_vs_teacher_pct']:+.0f} % | "
            f"{r['speedup_vs_teacher']:.2f}x | {_pct(r['memory_vs_teacher_pct'])} | "
            f"{_kb(r['size_kb'], r['predicted_size_kb'])} | "
            f"{_kb(r['activation_kb'], r['predicted_activation_kb'])} |"
        )
    lines += [
        "",
        "Latency: every stage's ONNX model timed in one interleaved batch (10th percentile of all runs, "
        "batch 1). Peak memory: growth of the peak RSS of a fresh process that creates the session and runs "
        "it 10 times (the runtime's own buffers included). Flash: the file's bytes; RAM: the largest sum of "
        "activation tensors alive at once along the file's graph (int8 tensors 1 byte); in brackets the "
        "predictions from the blocks alone, as the search uses them. Accuracy: the test split; int8 rows run "
        "in ONNX Runtime.",
    ]
    lines += _placement_lines(card.get("placement"))
    return "\n".join(lines) + "\n"


def _placement_lines(placements: dict[str, Any] | None) -> list[str]:
    """Which kernel ran each node of the candidates: executors, fallbacks, float nodes of int8, costliest ops."""
    if not placements:
        return []
    lines = ["", "## Where each node ran", ""]
    for stage, p in placements.items():
        s = p["summary"]
        executors = ", ".join(
            f"{name} {v['nodes']}" + (f" ({v['us'] / s['total_us'] * 100:.0f} % of the time)" if s["timed"] else "")
            for name, v in sorted(s["by_executor"].items(), key=lambda kv: -kv[1]["nodes"])
        )
        lines.append(f"- `{stage}`: {s['nodes']} nodes: {executors}")
        if s["fallbacks"]:
            shown = ", ".join(s["fallbacks"][:5]) + (
                f" and {len(s['fallbacks']) - 5} more" if len(s["fallbacks"]) > 5 else ""
            )
            lines.append(f"  - **fallbacks ({len(s['fallbacks'])})**: {shown}")
        if s["float_nodes_in_int8"]:
            share = f", quantize/dequantize conversions {s['conversion_us'] / s['total_us'] * 100:.0f} % of the time"
            lines.append(
                f"  - {s['float_nodes_in_int8']} float nodes inside the int8 graph" + (share if s["timed"] else "")
            )
        if s["costliest_ops"]:
            lines.append(
                "  - costliest ops: "
                + ", ".join(f"{op} {us / s['total_us'] * 100:.0f} %" for op, us in s["costliest_ops"])
            )
    lines += [
        "",
        "Times from the runtime's own profiler (it adds a fixed cost per node: shares, not latencies). "
        "A fallback is a node on another execution provider than the first one asked for (ONNX Runtime), a "
        "reference kernel (OpenVINO `ref_*`) or a portable kernel outside the delegate (ExecuTorch).",
    ]
    return lines


def _curve(log: dict[str, Any]) -> str:
    vals = ", ".join(f"{e['val_accuracy'] * 100:.2f}" for e in log["epochs"])
    return (
        f"val accuracy (%) after epochs 0 (before) to {len(log['epochs']) - 1}: {vals}; kept epoch {log['kept_epoch']}"
    )


def _training_lines(card: dict[str, Any]) -> list[str]:
    """The teacher's choice, the distillation curve, and what each step cost on validation."""
    lines = []
    choice = card.get("teacher_selection")
    if choice:
        scores = ", ".join(f"{k} {v * 100:.2f} %" for k, v in choice["val_accuracy"].items())
        lines.append(f"- teacher candidates (val accuracy): {scores}; chosen: {choice['chosen']}")
    if card.get("distill_epochs"):
        lines.append(f"- distillation: {_curve(card['distill_epochs'])}")
    val = card.get("validation")
    if val:
        steps = [k for k in ("searched", "distilled", "pruned", "qat") if k in val]
        chain = " -> ".join(f"{k} {val[k] * 100:.2f} %" for k in steps)
        lines.append(f"- validation accuracy after each step: {chain} (teacher {val['teacher'] * 100:.2f} %)")
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0f} %"


def _kb(measured: float | None, predicted: float | None) -> str:
    if measured is None:
        return "n/a"
    return f"{measured:.1f}" + (f" ({predicted:.1f})" if predicted is not None else "")


def _checks_line(checks: dict) -> str:
    """The exported files against torch: the fp32 file's max difference, the int8 file's top-1 agreement."""
    fp32, int8 = checks["fp32_vs_torch"], checks["int8_vs_fake_quant"]
    line = f"- fp32 file ({fp32.get('file', 'ONNX')}) vs torch: max abs diff {fp32['max_abs_diff']:.2e}"
    if int8["top1_agreement"] is None:
        return line + "; no QAT int8 file to check (QAT did not run)"
    agree = int8["top1_agreement"] * 100
    return line + f"; int8 file ({int8.get('file', 'ONNX')}) vs fake-quant torch: top-1 agreement {agree:.1f} %"
