"""edgenas: hardware-aware neural architecture search, from dataset to verified device model."""

from __future__ import annotations

__version__ = "0.1.0"
