"""Tests that need a Debian package: skipped where it is missing, failed under ``CI=true``."""

from __future__ import annotations

import os

import pytest


def require_system(found: bool, what: str, install: str) -> None:
    """Skip a test whose system package is missing; under ``CI=true`` fail instead, with the install line."""
    if found:
        return
    message = f"needs {what} ({install}; `make sysdeps` installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI must not skip it", pytrace=False)
    pytest.skip(message)
