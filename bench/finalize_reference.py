"""Search or finalize: a MobileNetV3 layout of the space finalized as the headline run finalizes its winners.

The headline run deploys a searched arch at each budget; `bench/references.py` compares it with
the space's MobileNetV3 layouts trained stand-alone. Where a reference wins, this bench says
whether the search chose worse (the reference, finalized the same way, beats the searched
arch) or finalize trains worse (the reference finalized falls short of its own stand-alone
accuracy): it runs finalize on the reference's layout with the supernet and config of the
headline run (`configs/fashion-mnist.yaml`: supernet weights, 15 distillation epochs from the
largest subnet, pruning, the QAT choice) and writes its stage table beside the figures it is
compared with.

    python bench/finalize_reference.py --reference mbv3-small-0.5 --device cpu-fast   # ~15-25 minutes

Resumable (finalize's steps); results in bench/results/finalize_reference_<reference>.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _setup import log

from edgenas import pipeline
from edgenas.config import load_config
from edgenas.finalize import finalize_arch
from edgenas.io import atomic_write_json, atomic_write_text, read_json
from edgenas.latency_tables import make_backend
from edgenas.layout import ModelCard
from edgenas.nas import load_supernet, set_threads
from edgenas.reports import accuracy_margin_pts
from edgenas.search_spaces import reference_archs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/fashion-mnist.yaml")
    p.add_argument("--reference", default="mbv3-small-0.5", help="a name of reference_archs(space)")
    p.add_argument("--device", default="cpu-fast", help="the headline device whose searched arch it is compared with")
    p.add_argument("--workdir", default="runs/bench_finalize_reference")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    set_threads(0)
    config = load_config(args.config)
    splits = pipeline.splits_for(config)
    space = pipeline.space_for(config, splits)
    refs = reference_archs(space)
    if args.reference not in refs:
        raise SystemExit(f"--reference {args.reference!r}: not a reference of this space; allowed: {sorted(refs)}")
    device = next((d for d in config.devices if d.name == args.device), None)
    if device is None:
        raise SystemExit(f"--device {args.device!r}: not in {args.config}; allowed: {[d.name for d in config.devices]}")
    if not config.layout.supernet.exists():
        raise SystemExit(f"{config.layout.supernet} is missing: run bench/deploy.py first")
    out = Path(args.workdir) / args.reference
    log(f"finalizing {args.reference} ({refs[args.reference]}) into {out}")
    card = finalize_arch(
        refs[args.reference],
        space=space,
        supernet=load_supernet(space, config.layout.supernet),
        splits=splits,
        backend=make_backend(device.device, threads=device.threads),
        out_dir=out,
        config=config.finalize,
        device=args.device,
        augment=config.data.augmentations,
        data=pipeline.data_record(config),
    )
    searched = config.layout.model_card(args.device)
    standalone = Path(args.out) / "references.json"
    results = {
        "reference": args.reference,
        "card": card,
        "searched": ModelCard.load(searched).data if searched.exists() else None,
        "standalone": _standalone(standalone, args.reference),
    }
    stem = f"finalize_reference_{args.reference}"  # not Path.with_suffix: "mbv3-small-0.5" has a dot
    atomic_write_json(Path(args.out) / f"{stem}.json", results)
    md = _markdown(results, args)
    atomic_write_text(Path(args.out) / f"{stem}.md", md)
    print(md)


def _standalone(path: Path, name: str) -> dict | None:
    """The reference's row of bench/references.py (its stand-alone accuracy and latency), if there is one."""
    if not path.exists():
        return None
    return next((r for r in read_json(path)["rows"] if r["kind"] == "MobileNetV3" and r["name"] == name), None)


def _markdown(results: dict, args: argparse.Namespace) -> str:
    card = ModelCard(results["card"])
    n = card.data["data_sizes"]["test"]

    def row(label: str, acc: float, ms: float, note: str) -> str:
        return f"| {label} | {acc * 100:.2f} % ± {accuracy_margin_pts(acc, n):.2f} | {ms:.3f} | {note} |"

    dep = card.deployed
    rows = [
        row(
            f"{args.reference} finalized (deployed {card.deployed_file})",
            dep["test_accuracy"],
            dep["latency_ms"],
            "this bench",
        )
    ]
    if results["standalone"]:
        s = results["standalone"]
        rows.append(
            row(f"{args.reference} stand-alone", s["test_accuracy"], s["latency_ms"], "bench/results/references.md")
        )
    if results["searched"]:
        sc = ModelCard(results["searched"])
        rows.append(
            row(
                f"{args.device}'s searched arch finalized",
                sc.deployed["test_accuracy"],
                sc.deployed["latency_ms"],
                "the headline run",
            )
        )
    curve = ", ".join(f"{e['val_accuracy'] * 100:.2f}" for e in card.data["distill_epochs"]["epochs"])
    return (
        "\n".join(
            [
                f"# Search or finalize: `{args.reference}` finalized as the headline run finalizes",
                "",
                f"`python bench/finalize_reference.py --reference {args.reference} --device {args.device}`: the "
                f"reference's layout `{card.arch}` finalized with `{args.config}`'s supernet and settings on "
                f"{card.data['device_fingerprint'].get('cpu', 'this CPU')}. Test accuracy on the official 10,000 "
                "images (± half the 95 % interval from the split's size); latency as each run measured it (ONNX "
                "Runtime fp32, 1 thread, batch 1; the stand-alone row from its own interleaved batch).",
                "",
                "| model | test accuracy | latency (ms) | from |",
                "|---|---|---|---|",
                *rows,
                "",
                f"Distillation, val accuracy (%) per epoch from 0: {curve}; kept epoch "
                f"{card.data['distill_epochs']['kept_epoch']}. Finalize's steps (minutes): "
                + ", ".join(f"{k} {v / 60:.1f}" for k, v in card.data["step_seconds"].items())
                + ".",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
