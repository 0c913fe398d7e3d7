from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import settings

# Every property test draws the same inputs on every run: a failure is found here, not one CI run in twenty.
settings.register_profile("operator-use", derandomize=True, database=None, deadline=None)
settings.load_profile("operator-use")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated data directory: config, sessions and workspace live under it."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("OPERATOR_HOME", str(path))
    return path


@pytest.fixture(autouse=True)
def _quiet_loggers() -> None:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
