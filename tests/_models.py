"""Models in each runtime's format, made once per test session (an ExecuTorch export takes seconds)."""

from __future__ import annotations

import functools

from edgenas.latency_tables import block_model, reference_model
from edgenas.search_spaces import BlockSpec


@functools.cache
def model_in(spec: BlockSpec | None, precision: str, fmt: str) -> bytes:
    """A block (or the reference net, for None) exported as ``fmt`` at ``precision``."""
    return block_model(spec, precision, fmt) if spec else reference_model(precision, fmt)
