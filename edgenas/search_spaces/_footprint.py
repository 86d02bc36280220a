"""Model size and peak activation memory of an arch, per precision: arithmetic on its blocks.

Both are as free as a latency-table lookup and describe the files edgenas exports:

- **size** (flash): the bytes of the ONNX file. fp32 stores each layer's BN-folded weight
  and bias in float32. int8 is the QAT export finalize deploys (``export_qat``): int8
  weights, and per output channel a float32 weight scale, an int8 zero point and a float32
  bias (9 bytes); every activation quantize point adds a float32 scale and a uint8 zero
  point. The graph itself (node and initializer records, names compacted) is counted per
  node type with byte costs read off exports at opset 17 (``_NODE_BYTES``); it is 3-4 %
  of a small int8 file, 0.2-0.5 % of an fp32 one.
- **activation memory** (RAM): the largest sum of tensors alive at once, batch 1, when
  the blocks run in order: the input, every layer's output until its last reader, the
  block input a residual add keeps alive and the feature map an SE branch keeps alive
  until its gate is applied. Activations and quantize/dequantize steps run in place on
  their producer's buffer (as integer runtimes, TFLite Micro included, and ONNX Runtime's
  fused kernels do); an SE product and a residual sum get their own buffer. fp32: 4 bytes
  per element; int8: 1 byte per element except the float input given to the model (4),
  which is quantized into a buffer of its own, and the float logits. Weights are not
  counted: they live in flash. :func:`edgenas.export.activation_peak` measures the same
  quantity on an exported file's graph.

Sizes are bytes; ``KB`` (1024 bytes, the kB of microcontroller data sheets) is what
configs and reports use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from edgenas.search_spaces._space import BlockSpec, se_channels

__all__ = [
    "FOOTPRINT_PRECISIONS",
    "KB",
    "Footprint",
    "footprint",
    "model_bytes",
    "net_footprint",
    "peak_activation_bytes",
]

KB = 1024
FOOTPRINT_PRECISIONS = ("fp32", "int8")

# Serialized bytes of one node record without its tensor names (op type, attributes, framing)
# and how many tensor names it references, by op type; of one initializer record without its
# name and data; of the model record around the graph (producer, opset, input and output).
# Read off fp32 and QAT int8 exports of `small` archs (opset 17, names compacted to t0, t1, ...).
_NODE_BYTES = {
    "Conv": 107,
    "Gemm": 60,
    "QuantizeLinear": 22,
    "DequantizeLinear": 24,
    "HardSwish": 17,
    "HardSigmoid": 36,
    "Clip": 12,
    "Constant": 38,
    "Add": 11,
    "Mul": 11,
    "Relu": 12,
    "ReduceMean": 50,
}
_NODE_NAMES = {
    "Conv": 4,
    "Gemm": 4,
    "QuantizeLinear": 4,
    "DequantizeLinear": 4,
    "HardSwish": 2,
    "HardSigmoid": 2,
    "Clip": 4,
    "Constant": 1,
    "Add": 3,
    "Mul": 3,
    "Relu": 2,
    "ReduceMean": 2,
}
_AXIS_BYTES = 13  # a weight's DequantizeLinear carries its per-channel axis
_WEIGHT_BYTES, _VECTOR_BYTES, _SCALAR_BYTES = 17, 10, 6  # initializer records by rank: weight, per-channel, scalar
_FILE_BYTES = 100
_ACT_NODES = {"relu6": ("Clip", "Constant", "Constant"), "hswish": ("HardSwish",), None: ()}


@dataclass(frozen=True)
class _Graph:
    """What a block adds to a file: weighted layers, activation quantize points, compute nodes."""

    layers: tuple[tuple[int, int], ...] = ()  # (weight elements, output channels) per conv / linear
    q_points: int = 0  # activation quantize points in the int8 export (a Q/DQ pair each)
    nodes: tuple[str, ...] = ()  # compute nodes (weights' DequantizeLinear and Q/DQ pairs not included)

    def __add__(self, other: _Graph) -> _Graph:
        return _Graph(self.layers + other.layers, self.q_points + other.q_points, self.nodes + other.nodes)


def _conv(cin: int, cout: int, k: int, groups: int, act: str | None, op: str = "Conv") -> _Graph:
    # hardswish has no int8 kernel: the int8 export quantizes before it as well as after
    return _Graph(((cout * (cin // groups) * k * k, cout),), 1 + (act == "hswish"), (op, *_ACT_NODES[act]))


def _se(chs: int) -> _Graph:
    r = se_channels(chs)
    # pool, reduce + ReLU, expand, hardsigmoid gate, product: five quantize points
    return _Graph(((r * chs, r), (chs * r, chs)), 5, ("ReduceMean", "Conv", "Relu", "Conv", "HardSigmoid", "Mul"))


def _block_graph(spec: BlockSpec) -> _Graph:
    if spec.kind == "conv":
        return _conv(spec.in_chs, spec.out_chs, spec.kernel, 1, spec.act)
    if spec.kind == "classifier":
        hidden = _conv(spec.in_chs, spec.mid_chs, 1, 1, spec.act, "Gemm")
        logits = _Graph(((spec.mid_chs * spec.out_chs, spec.out_chs),), 0, ("Gemm",))
        return hidden + logits + _Graph((), 1, ("ReduceMean",))  # the pooled features are quantized; the logits are not
    mid = spec.in_chs if spec.kind == "ds" else spec.mid_chs
    g = _conv(spec.in_chs, mid, 1, 1, spec.act) if spec.kind == "ir" else _Graph()
    g += _conv(mid, mid, spec.kernel, mid, spec.act)
    if spec.se:
        g += _se(mid)
    g += _conv(mid, spec.out_chs, 1, 1, None)
    return g + (_Graph((), 1, ("Add",)) if spec.residual else _Graph())


def model_bytes(specs: Sequence[BlockSpec], precision: str, layers: Sequence[tuple[int, int]] | None = None) -> int:
    """Predicted bytes of the exported ONNX file (without metadata) of a net of these blocks.

    ``layers``: (weight elements, output channels) of every conv and linear layer, where
    the net has them from elsewhere (:func:`net_footprint`: a pruned net's SE reductions).
    """
    _check(precision)
    blocks = [_block_records(s) for s in specs]  # cached per block: an arch costs a sum, not a walk of its nodes
    own = [layer for b in blocks for layer in b[0]]
    if layers is not None and len(layers) != len(own):
        raise ValueError(f"{len(layers)} layers given for blocks that have {len(own)}")
    layers = own if layers is None else layers
    q_points, node_bytes, node_names, n_nodes = (sum(t) for t in zip(*(b[1:] for b in blocks)))
    n_layers = len(layers)
    if precision == "fp32":  # per layer: weight, bias
        data = sum(4 * w + 4 * c for w, c in layers)
        inits = 2 * n_layers
        records = (_WEIGHT_BYTES + _VECTOR_BYTES) * n_layers
    else:  # per layer: weight, scale, zero point, bias; per quantize point: scale, zero point
        q_points += 1  # the model's input is quantized too
        data = sum(w + 9 * c for w, c in layers) + 5 * q_points
        inits = 4 * n_layers + 2 * q_points
        records = (_WEIGHT_BYTES + 3 * _VECTOR_BYTES + _AXIS_BYTES) * n_layers + 2 * _SCALAR_BYTES * q_points
        # a DequantizeLinear per weight and per quantize point, a QuantizeLinear per quantize point
        dq, q = n_layers + q_points, q_points
        node_bytes += _NODE_BYTES["DequantizeLinear"] * dq + _NODE_BYTES["QuantizeLinear"] * q
        node_names += _NODE_NAMES["DequantizeLinear"] * dq + _NODE_NAMES["QuantizeLinear"] * q
        n_nodes += dq + q
    # every tensor gets a short name t0, t1, ...: initializers, then each node's output
    refs = node_names + inits
    names = inits + n_nodes
    return round(data + records + node_bytes + refs * (3 + _mean_digits(names)) + _FILE_BYTES)


@lru_cache(maxsize=65536)
def _block_records(spec: BlockSpec) -> tuple[tuple[tuple[int, int], ...], int, int, int, int]:
    """A block's (layers, quantize points, record bytes, tensor names referenced and count of its compute nodes)."""
    g = _block_graph(spec)
    return (
        g.layers,
        g.q_points,
        sum(_NODE_BYTES[n] for n in g.nodes),
        sum(_NODE_NAMES[n] for n in g.nodes),
        len(g.nodes),
    )


def _mean_digits(n: int) -> float:
    """Mean number of decimal digits of 0 .. n - 1 (the ids of compacted tensor names)."""
    total = sum(max(0, min(n, 10**k) - max(1, 10 ** (k - 1)) + (k == 1)) * k for k in range(1, 10))
    return total / max(n, 1)


@lru_cache(maxsize=65536)
def _block_peak(spec: BlockSpec, nbytes: int) -> tuple[int, int]:
    """(peak bytes while the block runs, its input included; bytes of its output)."""
    x = spec.in_chs * spec.in_size**2 * nbytes
    out2 = spec.out_size**2
    if spec.kind == "conv":
        y = spec.out_chs * out2 * nbytes
        return x + y, y
    if spec.kind == "classifier":
        pooled, hidden, logits = spec.in_chs * nbytes, spec.mid_chs * nbytes, spec.out_chs * 4
        return max(x + pooled, pooled + hidden, hidden + logits), logits
    mid = spec.in_chs if spec.kind == "ds" else spec.mid_chs
    keep = x if spec.residual else 0  # the residual add reads the block input last
    steps = []
    if spec.kind == "ir":
        e = mid * spec.in_size**2 * nbytes
        d = mid * out2 * nbytes
        steps += [x + e, keep + e + d]
    else:  # the depthwise conv reads the block input itself
        d = mid * out2 * nbytes
        steps += [x + d]
    if spec.se:
        pooled, r = mid * nbytes, se_channels(mid) * nbytes
        # pool; reduce (pool alive); expand (pool freed); the product beside its two factors
        steps += [keep + d + pooled, keep + d + pooled + r, keep + d + r + pooled, keep + d + pooled + d]
    y = spec.out_chs * out2 * nbytes
    steps.append(keep + d + y)  # the projection reads the (gated) depthwise output
    if spec.residual:
        steps.append(x + y + y)
    return max(steps), y


def peak_activation_bytes(specs: Sequence[BlockSpec], precision: str) -> int:
    """Predicted peak bytes of live activations (batch 1) when a net of these blocks runs."""
    _check(precision)
    nbytes = 4 if precision == "fp32" else 1
    first = specs[0]
    given = first.in_chs * first.in_size**2 * 4  # the float input handed to the model
    peak = given + (given // 4 if nbytes == 1 else 0)  # int8: quantized into its own buffer
    for spec in specs:
        block, _ = _block_peak(spec, nbytes)
        peak = max(peak, block)
    return peak


@dataclass(frozen=True)
class Footprint:
    """An arch's size and activation memory (bytes) at fp32 and int8, its MACs and parameters."""

    macs: int
    params: int
    size_bytes: dict[str, int]
    activation_bytes: dict[str, int]

    def record(self) -> dict[str, float]:
        """Flat figures in KB, as a search trial stores them (``flash_kb:int8``, ``ram_kb:fp32``, ...)."""
        out = {}
        for p in FOOTPRINT_PRECISIONS:
            out[f"flash_kb:{p}"] = round(self.size_bytes[p] / KB, 3)
            out[f"ram_kb:{p}"] = round(self.activation_bytes[p] / KB, 3)
        return out


def footprint(specs: Sequence[BlockSpec]) -> Footprint:
    """Size and activation memory of a net of these blocks at every precision, MACs and params."""
    from edgenas.search_spaces._space import spec_macs, spec_params

    return Footprint(
        macs=sum(spec_macs(s) for s in specs),
        params=sum(spec_params(s) for s in specs),
        size_bytes={p: model_bytes(specs, p) for p in FOOTPRINT_PRECISIONS},
        activation_bytes={p: peak_activation_bytes(specs, p) for p in FOOTPRINT_PRECISIONS},
    )


def net_footprint(net) -> Footprint:  # a SubNet; typed loosely to keep torch out of this module
    """The footprint of a built, possibly pruned, :class:`SubNet`: its blocks from
    :func:`current_specs`, its layers' weights as they are (pruning narrows SE reductions too,
    which a spec does not describe; they change the size, not the activation peak)."""
    import torch

    from edgenas.search_spaces._blocks import current_specs

    specs = current_specs(net)
    layers = [
        (m.weight.numel(), m.weight.shape[0])
        for m in net.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    fp = footprint(specs)
    folded = sum(w + c for w, c in layers)  # BN folded: a bias per output channel
    return Footprint(
        macs=fp.macs,
        params=folded,
        activation_bytes=fp.activation_bytes,
        size_bytes={p: model_bytes(specs, p, layers) for p in FOOTPRINT_PRECISIONS},
    )


def _check(precision: str) -> None:
    if precision not in FOOTPRINT_PRECISIONS:
        raise ValueError(f"precision must be one of {FOOTPRINT_PRECISIONS}, got {precision!r}")
