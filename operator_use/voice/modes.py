"""Per-chat voice reply mode (/voice), kept in one small JSON file in the data home.

Writes replace the file atomically (temporary file + rename) in a worker thread, so a crash leaves either
the old or the new file, never half of one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import get_args

from .config import VoiceMode

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = get_args(VoiceMode)


class VoiceModes:
    def __init__(self, path: Path, default: VoiceMode = "when_spoken") -> None:
        self.path = path
        self.default = default
        self._modes: dict[str, str] | None = None
        self._lock = asyncio.Lock()

    async def get(self, key: str) -> VoiceMode:
        modes = await self._loaded()
        mode = modes.get(key, self.default)
        return mode if mode in MODES else self.default  # type: ignore[return-value]

    async def set(self, key: str, mode: VoiceMode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown voice mode {mode!r}")
        async with self._lock:
            modes = dict(await self._loaded())
            modes[key] = mode
            await asyncio.to_thread(_write_atomic, self.path, modes)
            self._modes = modes

    async def _loaded(self) -> dict[str, str]:
        if self._modes is None:
            self._modes = await asyncio.to_thread(_read, self.path)
        return self._modes


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Losing voice preferences is better than refusing to answer: say so and start from defaults.
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("ignoring %s: not a JSON object", path)
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _write_atomic(path: Path, modes: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(modes, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
