"""How often a refused websocket (no valid token) is worth a warning in the log.

A stale page retries, and anyone on the machine can knock with a new bogus cookie at every try, so what a
client shows cannot be what we count by: the warnings are per remote address (once per `per_address`
seconds) and, across all addresses, at most one per `interval` seconds. Everything else goes to debug, and
the next warning says how many refusals were not logged since the one before.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# Addresses remembered (a bounded memory: a flood of addresses only means more debug lines).
ADDRESSES_KEPT = 1024


class RefusalLog:
    def __init__(
        self,
        *,
        interval: float = 60.0,
        per_address: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.per_address = per_address
        self._clock = clock
        self._warned: OrderedDict[str, float] = OrderedDict()  # address -> when it was last warned about
        self._last: float | None = None  # the last warning, any address
        self.suppressed = 0  # refusals not warned about since the last warning

    def refused(self, address: str) -> int | None:
        """Record a refusal from `address`: the number of refusals not logged since the previous warning when
        this one deserves a warning, None when it goes to debug."""
        now = self._clock()
        seen = self._warned.get(address)
        if (seen is not None and now - seen < self.per_address) or (
            self._last is not None and now - self._last < self.interval
        ):
            self.suppressed += 1
            return None
        self._warned[address] = now
        self._warned.move_to_end(address)
        while len(self._warned) > ADDRESSES_KEPT:
            self._warned.popitem(last=False)
        self._last = now
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed
