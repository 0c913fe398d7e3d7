"""One turn at a time per conversation, many conversations at once.

Each conversation key gets a lane: a FIFO of pending work and a worker task that exists only while
there is work. A global semaphore caps how many turns run at the same time across all lanes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Lane(Generic[T]):
    pending: deque[T] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    current: asyncio.Task[None] | None = None


class Lanes(Generic[T]):
    def __init__(self, handler: Callable[[T], Coroutine[Any, Any, None]], max_concurrent: int) -> None:
        self._handler = handler
        self._lanes: dict[str, _Lane[T]] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._workers: set[asyncio.Task[None]] = set()

    def submit(self, key: str, item: T) -> None:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.pending.append(item)
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(key, lane), name=f"lane:{key}")
            self._workers.add(lane.worker)
            lane.worker.add_done_callback(self._workers.discard)

    async def _drain(self, key: str, lane: _Lane[T]) -> None:
        try:
            while lane.pending:
                item = lane.pending.popleft()
                async with self._slots:
                    # A task of its own, so /stop can cancel this turn without killing the lane.
                    lane.current = asyncio.create_task(self._handler(item), name=f"turn:{key}")
                    try:
                        await asyncio.wait({lane.current})
                        if not lane.current.cancelled() and lane.current.exception():
                            log.error("turn in %s failed", key, exc_info=lane.current.exception())
                    finally:
                        if not lane.current.done():
                            lane.current.cancel()  # the lane itself is being shut down
                        lane.current = None
        finally:
            lane.worker = None
            if not lane.pending and self._lanes.get(key) is lane:
                del self._lanes[key]

    def cancel(self, key: str, *, drop_pending: bool = True) -> int:
        """Cancel the running turn of `key` (and its queued work). Returns how many items were stopped."""
        lane = self._lanes.get(key)
        if lane is None:
            return 0
        stopped = len(lane.pending) if drop_pending else 0
        if drop_pending:
            lane.pending.clear()
        # A command run from inside the turn itself (a spoken /new) must not cancel the turn running it.
        if lane.current is not None and not lane.current.done() and lane.current is not asyncio.current_task():
            lane.current.cancel()
            stopped += 1
        return stopped

    def busy(self, key: str) -> bool:
        lane = self._lanes.get(key)
        return lane is not None and lane.current is not None

    def queued(self, key: str) -> int:
        lane = self._lanes.get(key)
        return len(lane.pending) if lane else 0

    @property
    def running(self) -> int:
        return sum(1 for lane in self._lanes.values() if lane.current is not None)

    def snapshot(self) -> list[tuple[str, bool, int]]:
        """(key, turn running, items queued) for each conversation with work: `operator-use status`."""
        return [(key, lane.current is not None, len(lane.pending)) for key, lane in self._lanes.items()]

    async def idle(self) -> None:
        """Wait until every lane has drained (tests and graceful shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers), return_exceptions=True)

    async def close(self) -> None:
        for key in list(self._lanes):
            self.cancel(key)
        for worker in list(self._workers):
            worker.cancel()
        await asyncio.gather(*list(self._workers), return_exceptions=True)
