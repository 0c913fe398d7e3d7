"""A chain of models: when one is rate-limited, overloaded or down, the next one answers.

Only failures before the first chunk can fall back: once text has been streamed to the user it cannot
be taken back, so a mid-stream failure is re-raised as is. With stream limits (limits.py) on each model,
a model that stays silent past `llm.idle_timeout` before its first chunk falls back like any timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from ...messages import HistoryMessage
from .base import LLM, LLMChunk, LLMError, ToolSchema

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0


class FallbackLLM(LLM):
    provider = "fallback"

    def __init__(
        self,
        llms: Sequence[LLM],
        *,
        max_wait: float = 10.0,
        failure_threshold: int = 3,
        cooldown: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not llms:
            raise ValueError("FallbackLLM needs at least one model")
        super().__init__(llms[0].model)
        self.llms = list(llms)
        self.max_wait = max_wait
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._sleep = sleep
        self._breakers = [_Breaker() for _ in self.llms]
        # Label of the model that produced the latest answer (or started to).
        self.last_model: str | None = None

    @property
    def label(self) -> str:
        return " -> ".join(llm.label for llm in self.llms)

    def is_open(self, index: int) -> bool:
        return self._clock() < self._breakers[index].open_until

    def _order(self) -> list[int]:
        # Healthy models first, in configured order; models in cooldown only as a last resort, so a
        # chain whose every breaker is open still tries instead of failing instantly.
        closed = [i for i in range(len(self.llms)) if not self.is_open(i)]
        opened = [i for i in range(len(self.llms)) if self.is_open(i)]
        for i in opened:
            log.info("skipping %s: circuit open after %d failures", self.llms[i].label, self._breakers[i].failures)
        return closed + opened

    def _failed(self, index: int, exc: LLMError) -> None:
        breaker = self._breakers[index]
        breaker.failures += 1
        if breaker.failures >= self.failure_threshold:
            breaker.open_until = self._clock() + max(self.cooldown, exc.retry_after or 0.0)

    def _succeeded(self, index: int) -> None:
        self._breakers[index] = _Breaker()

    async def stream(
        self, messages: Sequence[HistoryMessage], tools: Sequence[ToolSchema] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        order = self._order()
        last_error: LLMError | None = None
        for pos, index in enumerate(order):
            llm = self.llms[index]
            is_last = pos == len(order) - 1
            waited = False
            while True:
                started = False
                inner = llm.stream(messages, tools)
                try:
                    async for chunk in inner:
                        if not started:
                            started = True
                            self.last_model = llm.label
                        yield chunk
                except LLMError as exc:
                    if not exc.retryable:
                        # A bad key or a bad request would fail the same way elsewhere, or hide a mistake.
                        raise
                    self._failed(index, exc)
                    if started:
                        raise
                    last_error = exc
                    retry_after = exc.retry_after
                    if is_last and not waited and retry_after is not None and retry_after <= self.max_wait:
                        log.warning(
                            "%s failed (%s: %s); retrying in %.1fs as asked",
                            llm.label,
                            type(exc).__name__,
                            exc,
                            retry_after,
                        )
                        waited = True
                        await self._sleep(retry_after)
                        continue
                    if not is_last:
                        log.warning(
                            "falling back from %s to %s: %s: %s",
                            llm.label,
                            self.llms[order[pos + 1]].label,
                            type(exc).__name__,
                            exc,
                        )
                    break
                finally:
                    aclose = getattr(inner, "aclose", None)
                    if aclose is not None:
                        await aclose()
                self._succeeded(index)
                return
        assert last_error is not None
        log.warning("all models failed; last error from %s", last_error.model or "?")
        raise last_error

    async def aclose(self) -> None:
        for llm in self.llms:
            await llm.aclose()
