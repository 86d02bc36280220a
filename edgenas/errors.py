"""Errors the command line reports in one line, importable without torch (the agent's machine has none)."""

from __future__ import annotations

__all__ = ["ExportCheckError"]


class ExportCheckError(RuntimeError):
    """An exported model does not compute what its torch model computes (the model card says which)."""
