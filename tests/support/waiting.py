"""Waiting on what a fake observed, without timers: each change notifies, each wait re-checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Observable:
    """Mixin for fakes and test channels. Subclasses create `self._changed = asyncio.Condition()` and
    call `await self._notify()` after every change they record."""

    _changed: asyncio.Condition

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(check(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
