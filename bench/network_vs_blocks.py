"""Where a network's time goes beyond the sum of its blocks: ONNX Runtime's node times, by op kind.

Each arch is exported whole and block by block (as a table times it), and every file runs
under ONNX Runtime's profiler (``edgenas.latency_tables.placement``, 1 thread, ``--runs``
runs), in ``--rounds`` rounds that alternate the network and its blocks (the median per kind).
Per op kind (Conv, Gemm, the layout Reorders, ...): the network's time against the sum over its
blocks alone. A kind the network runs slower than its blocks did is what the
table's sum misses there: layout Reorders show a lone block's edges (a network has fewer),
slower Convs and Gemms a network whose weights no longer stay in cache between runs.

    python bench/network_vs_blocks.py                   # the space's largest arch and two of 4.6-5.5 MB
    python bench/network_vs_blocks.py --archs "r28|k3e3|k5e4|k3e3se|k3e6-k3e4se"
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from _setup import log

from edgenas.io import atomic_write_json, atomic_write_text
from edgenas.latency_tables import arch_model, block_model, make_runtime, placement
from edgenas.search_spaces import get_space, model_bytes, spec_params

ARCHS = (
    "r28|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se|k7e6se-k7e6se-k7e6se",
    "r28|k3e4-k3e4|k3e6|k5e6-k3e4-k7e6se|k7e6se-k7e4-k3e4",
    "r28|k7e6se-k7e4se|k5e3se|k5e6-k5e4|k5e3se-k7e4se-k3e3se",
)


def by_kind(rows: list[dict]) -> Counter:
    """Microseconds per run by op kind (ONNX Runtime's ReorderInput/ReorderOutput as one: Reorder)."""
    kinds: Counter = Counter()
    for r in rows:
        kinds["Reorder" if r["op"].startswith("Reorder") else r["op"]] += r["us"]
    return kinds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated archs of the small space")
    p.add_argument("--runs", type=int, default=500, help="profiled runs per file and round")
    p.add_argument("--rounds", type=int, default=7, help="rounds over the network and its blocks (median per kind)")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()

    space = get_space("small")
    runtime = make_runtime("local-cpu", threads=1)
    results = []
    for text in args.archs.split(","):
        arch = space.parse(text)
        specs = space.block_specs(arch)
        files = [arch_model(space, arch, "fp32")] + [block_model(spec, "fp32") for spec in specs]
        # rounds alternate the network and its blocks, so that the machine's slow spells hit both alike;
        # per kind the median over rounds
        rounds: list[tuple[Counter, Counter]] = []
        for _ in range(args.rounds):
            network = by_kind(placement(runtime, files[0], runs=args.runs))
            alone: Counter = Counter()
            for f in files[1:]:
                alone.update(by_kind(placement(runtime, f, runs=args.runs)))
            rounds.append((network, alone))
        kinds = sorted({k for n, a in rounds for k in (*n, *a)}, key=lambda k: -rounds[0][1].get(k, 0.0))
        network_us = {k: float(np.median([n.get(k, 0.0) for n, _ in rounds])) for k in kinds}
        alone_us = {k: float(np.median([a.get(k, 0.0) for _, a in rounds])) for k in kinds}
        results.append(
            {
                "arch": text,
                "params": sum(spec_params(s) for s in specs),
                "weights_mb": model_bytes(specs, "fp32") / 1e6,
                "network_us": network_us,
                "blocks_alone_us": alone_us,
                "network_over_alone_per_round": [sum(n.values()) / sum(a.values()) for n, a in rounds],
                "kinds": kinds,
            }
        )
        log(f"{text}: network {sum(network_us.values()):.0f} us, blocks alone {sum(alone_us.values()):.0f} us")

    out = Path(args.out)
    atomic_write_json(
        out / "network_vs_blocks.json", {"settings": vars(args), "runtime": runtime.version(), "archs": results}
    )
    md = [
        "# A network's node times against its blocks alone (ONNX Runtime fp32, 1 thread)",
        "",
        f"`python bench/network_vs_blocks.py --runs {args.runs} --rounds {args.rounds}`: per op kind, microseconds "
        "per run under ONNX Runtime's profiler (the median over rounds that alternate the network and its "
        "blocks), the whole network against the sum over its blocks exported alone (as a table times them). "
        "Ratio > 1: the network runs that kind slower than its blocks did.",
    ]
    for r in results:
        net, alone = r["network_us"], r["blocks_alone_us"]
        md += [
            "",
            f"**`{r['arch']}`**: {r['params'] / 1e6:.2f} M parameters ({r['weights_mb']:.1f} MB), network "
            f"{sum(net.values()):.0f} us, blocks alone {sum(alone.values()):.0f} us; network / blocks alone per round: "
            + ", ".join(f"{x:.2f}" for x in r["network_over_alone_per_round"]),
            "",
            "| op kind | blocks alone (us) | network (us) | ratio |",
            "|---|---|---|---|",
        ]
        for k in r["kinds"]:
            a, n = alone.get(k, 0.0), net.get(k, 0.0)
            md.append(f"| {k} | {a:.1f} | {n:.1f} | {n / a:.2f} |" if a else f"| {k} | 0 | {n:.1f} | - |")
    atomic_write_text(out / "network_vs_blocks.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
