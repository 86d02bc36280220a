"""Is the space's macro structure the lever? MobileNetV3 layouts trained alone in variants of the headline space.

The headline space (``configs/small28.yaml``) keeps the 28-px image whole through a stride-1
stem, a depthwise-separable block and the first stage's expansion at 28x28, and ends in a
1024-unit classifier hidden layer that does not scale with the width. Per-node profiles put
those parts at a third of a small arch's ONNX Runtime time. Each variant changes one of them:

  f512      the classifier's hidden layer 512 wide instead of 1024 (f256, f128: 256, 128)
  s2        a stride-2 stem and a stride-1 first stage: the same resolutions from the first
            stage on (14, 7, 7, 4), the stem and depthwise-separable block at 14x14
  s2-f512   both

A layout (by default MobileNetV3-Small 0.5 as the space expresses it, the reference the
fast route of the headline target is measured against) is trained from scratch in each variant with
``bench/references.py``'s recipe and epochs, scored on the test split as ``edgenas predict``
scores a file, and timed in one interleaved batch beside the same layout in the headline space
(fresh weights: ONNX Runtime's time does not depend on their values). A variant worth a new
supernet keeps the accuracy (within the seeds' spread) at a clearly lower latency. ``--archs``
adds any arch of the space (e.g. what a search deployed) trained the same way, from scratch:
in ``base``, what finalize's start from the supernet's weights is worth against no supernet.

Resumable: each (variant, model, seed) result is written to ``bench/results/space_variants/``
when it is done; a rerun trains only what is missing. A reference layout's result in ``base``
is the reference's own (``bench/results/references/``), trained with the same recipe.

    python bench/space_variants.py --variants f512 s2-f512 --seeds 2 --threads 1
    python bench/space_variants.py --variants base --layouts --archs 'r28w0.5|k5e3|k7e3|k5e3se|k5e4-k5e4'
    python bench/space_variants.py --no-train      # only the timing batch and the table
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from _setup import log, md_code
from references import reference_recipe, train_reference

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.export import export_onnx
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import LocalBackend, Protocol, reference_model
from edgenas.nas import set_threads
from edgenas.search_spaces import Arch, Space, build_subnet, reference_archs

VARIANTS = {
    "base": {},
    "f512": {"feature_chs": 512},
    "f256": {"feature_chs": 256},
    "f128": {"feature_chs": 128},
    "s2": {"stem_stride": 2, "first_stage_stride": 1},
    "s2-f512": {"stem_stride": 2, "first_stage_stride": 1, "feature_chs": 512},
}


def variant_space(space: Space, name: str) -> Space:
    """``space`` with variant ``name``'s changes (its name suffixed, so that nothing mistakes one for the other)."""
    changes = dict(VARIANTS[name])
    if "feature_chs" in changes:  # a fixed hidden width: no choice of narrower ones
        changes["feature_choices"] = ()
    first = changes.pop("first_stage_stride", None)
    stages = list(space.stages)
    if first is not None:
        stages[0] = dataclasses.replace(stages[0], stride=first)
    suffix = "" if name == "base" else f"-{name}"
    return dataclasses.replace(space, name=f"{space.name}{suffix}", stages=tuple(stages), **changes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["base", "f512", "s2-f512"])
    p.add_argument("--layouts", nargs="*", default=["mbv3-small-0.5"], help="reference layouts (reference_archs)")
    p.add_argument("--archs", nargs="*", default=[], help="archs of the space, trained from scratch in each variant")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's finalize.distill_epochs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    p.add_argument("--batches", type=int, default=5, help="interleaved timing batches (each file's median)")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--workdir", default="runs/bench_space_variants")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    set_threads(args.threads)
    config = load_config(args.config)
    splits = pipeline.splits_for(config)
    base = pipeline.space_for(config, splits)
    recipe = reference_recipe(config, args.epochs)
    epochs = recipe.epochs
    results, work = Path(args.out) / "space_variants", Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for arch in args.archs:
        base.parse(arch)  # an arch outside the space fails before any training
    models = [*args.layouts, *args.archs]
    for variant in [] if args.no_train else args.variants:
        space = variant_space(base, variant)
        for model in models:
            if variant == "base" and model in args.layouts:
                continue  # the reference's own seeds (bench/references.py)
            for seed in range(args.seeds):
                path = results / f"{variant}_{_slug(model)}_s{seed}.json"
                if path.exists() and read_json(path)["epochs"] == epochs:
                    continue
                arch = _arch(space, model)
                fit = dataclasses.replace(recipe, seed=seed)
                row = train_reference(space, arch, splits, fit, work / f"{variant}_{_slug(model)}", seed)
                atomic_write_json(
                    path, {"variant": variant, "model": model, "arch": str(arch), "seed": seed, "epochs": epochs, **row}
                )
                log(f"{variant} {model} seed {seed}: test {row['test_accuracy'] * 100:.2f} %")
    rows = table(base, args.variants, models, epochs, results, args.batches)
    stem = Path(args.out) / "space_variants"
    atomic_write_json(stem.with_suffix(".json"), {"epochs": epochs, "rows": rows})
    atomic_write_text(stem.with_suffix(".md"), markdown(rows, epochs, args.batches))
    print(markdown(rows, epochs, args.batches))


def _arch(space: Space, model: str) -> Arch:
    """A reference layout by name (as ``space`` expresses it), or an arch string."""
    refs = reference_archs(space)
    return refs[model] if model in refs else space.parse(model)


def _slug(model: str) -> str:
    return model.replace("|", "_")


def _results(variant: str, model: str, epochs: int, results: Path) -> list[dict]:
    """Every seed done; a reference layout's in the base variant are the reference's own (bench/references.py)."""
    own = results.parent / "references"
    paths = sorted(own.glob(f"{model}_s*.json")) if variant == "base" and "|" not in model else []
    paths = paths or sorted(results.glob(f"{variant}_{_slug(model)}_s*.json"))
    return [r for r in (read_json(p) for p in paths) if r.get("epochs") == epochs]


def table(base: Space, variants: list[str], models: list[str], epochs: int, results: Path, batches: int) -> list[dict]:
    """Each (variant, model) with its seeds' test accuracy and its latency, timed in ``batches`` interleaved
    batches (fresh weights, each file's median), and its latency over the same model's in the first variant."""
    import torch

    rows, files = [], []
    for model in models:
        for variant in variants:
            space = variant_space(base, variant)
            arch = _arch(space, model)
            accs = [r["test_accuracy"] for r in _results(variant, model, epochs, results)]
            torch.manual_seed(0)
            files.append(
                export_onnx(build_subnet(space, arch).eval(), (1, space.in_chs, arch.resolution, arch.resolution))
            )
            rows.append({"variant": variant, "model": model, "arch": str(arch), "seeds": accs})
    backend = LocalBackend(threads=1)
    runs = [backend.measure(files, reference_model("fp32"), Protocol(rounds=30))[0] for _ in range(batches)]
    for i, row in enumerate(rows):
        row["latency_ms"] = statistics.median(timings[i].ms for timings in runs)
        row["test_accuracy"] = sum(row["seeds"]) / len(row["seeds"]) if row["seeds"] else None
        first = next(r for r in rows if r["model"] == row["model"])
        row["latency_vs_first"] = row["latency_ms"] / first["latency_ms"]
    return rows


def markdown(rows: list[dict], epochs: int, batches: int) -> str:
    lines = [
        "# MobileNetV3 layouts in variants of the headline space",
        "",
        f"Each model trained from scratch for {epochs} epochs with bench/references.py's recipe (a reference "
        f"layout in base: the reference's own seeds), test accuracy on the official 10,000 images; latency: "
        f"ONNX Runtime fp32, 1 thread, batch 1, the median of {batches} interleaved batches on this CPU.",
        "",
        "| variant | model | arch | test accuracy (seeds) | latency (ms) | latency vs the first variant |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = (
            f"{r['test_accuracy'] * 100:.2f} % ({', '.join(f'{a * 100:.2f}' for a in r['seeds'])})"
            if r["seeds"]
            else "not trained"
        )
        lines.append(
            f"| {r['variant']} | {md_code(r['model'])} | {md_code(r['arch'])} | {acc} | {r['latency_ms']:.3f} | "
            f"{r['latency_vs_first']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
