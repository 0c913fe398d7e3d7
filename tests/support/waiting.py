"""Waiting on what a fake observed, without timers: each change notifies, each wait re-checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Observable:
    """Mixin for fakes and test channels. Subclasses create `self._changed = asyncio.Condition()` and
    call `await self._notify()` after every change they record."""

    _changed: asyncio.Condition
    # A bound against hangs, not a measure of speed. Speech tests raise it: transcription runs at the lowest
    # CPU priority by design, so on a busy machine a note can wait a long time for a core.
    wait_timeout: float = 20.0

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(check(), timeout if timeout is not None else self.wait_timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
