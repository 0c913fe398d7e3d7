"""Time for the gateway, behind a tiny protocol so tests and the bench can run on virtual time.

Everything in the gateway that waits (edit throttling, RetryAfter, typing refresh, start retries) goes
through a `Clock`. `RealClock` is the event loop's monotonic time; `FakeClock` is virtual time that only
moves when a test says so, which makes 30-second streams run in milliseconds and deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time. `sleep` parks the caller until `advance`/`advance_to` moves time past its deadline.

    Sleepers are woken one deadline at a time, in order, with `now()` set to that deadline, and the loop is
    run until idle in between, so a task sees exactly the time it asked to wake at.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._seq = itertools.count()  # tie-breaker: equal deadlines wake in sleep order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # still a scheduling point, like asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        # A cancelled sleeper leaves a cancelled future in the heap; advance() skips it.
        await fut

    # --- driving time (tests, bench) ---

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        self._drop_dead()
        return self._sleepers[0][0] if self._sleepers else None

    async def run_until_idle(self, max_spins: int = 10_000) -> None:
        """Let every runnable task run until none is left (virtual time does not move)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)  # CPython's run queue: the cheapest exact idleness test
        quiet = 0
        for _ in range(max_spins):
            await asyncio.sleep(0)
            if ready is None:
                quiet += 1
                if quiet >= 50:  # no introspection available: a generous fixed number of spins
                    return
            elif not ready:
                quiet += 1
                if quiet >= 3:  # idle for a few consecutive rounds: callbacks chained through futures settled
                    return
            else:
                quiet = 0

    async def advance(self, seconds: float) -> None:
        await self.advance_to(self._now + max(0.0, seconds))

    async def advance_to(self, target: float) -> None:
        await self.run_until_idle()
        while True:
            self._drop_dead()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= deadline:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.run_until_idle()
        self._now = max(self._now, target)
        await self.run_until_idle()

    async def drive(self, aw: Awaitable[T], *, max_seconds: float = 3600.0) -> T:
        """Run `aw` to completion, jumping virtual time from one deadline to the next as needed."""
        task = asyncio.ensure_future(aw)
        limit = self._now + max_seconds
        try:
            while True:
                await self.run_until_idle()
                if task.done():
                    return task.result()
                nxt = self.next_deadline()
                if nxt is None or nxt > limit:
                    raise TimeoutError(f"awaitable did not finish within {max_seconds}s of virtual time")
                await self.advance_to(nxt)
        finally:
            if not task.done():
                task.cancel()

    def _drop_dead(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
