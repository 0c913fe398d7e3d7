"""Optional test dependencies: skipped on a developer machine that lacks them, a failure in CI."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI needs the Python package providing {name!r}: {exc}")
        pytest.skip(f"{name} is not installed")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"CI needs the program {name!r} (install it in .ci/run)")
        pytest.skip(f"{name} is not installed")
    return path


def unavailable(reason: str) -> None:
    """What this test needs is missing here (root, a tmpfs mount): a skip on a developer machine, a failure in
    CI, which runs as root with everything installed."""
    if IN_CI:
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)
