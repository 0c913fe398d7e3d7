"""The agent loop: one loop, streaming always.

Each iteration builds the prompt, streams one LLM call (text deltas go out as they arrive), runs every
tool call the model asked for (independent calls concurrently) and feeds the results back, until the
model answers without tools or `max_iterations` is reached. History is persisted at safe points, so a
crash or a /stop mid-turn never leaves a tool call without its result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from ..messages import AIMessage, HistoryMessage, HumanMessage, SystemMessage, ToolCall, ToolMessage, Usage
from ..providers.llm.base import LLM, FinishChunk, TextChunk, ToolCallChunk, UsageChunk
from ..providers.llm.limits import StreamCutOff, StreamLimits, with_limits
from ..session.truncate import estimate_tokens, fit_to_budget
from .context import ContextBuilder
from .hooks import Hooks
from .tools import ToolRegistry, ToolResult
from .turn import TurnContext, current_turn

log = logging.getLogger(__name__)


# --- events the loop emits while it works ---


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class BlockEnd:
    """Text written so far stays; the model is about to call tools."""


@dataclass(frozen=True, slots=True)
class ToolStarted:
    call: ToolCall


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call: ToolCall
    result: ToolResult


AgentEvent = TextDelta | BlockEnd | ToolStarted | ToolFinished
Emit = Callable[[AgentEvent], Awaitable[None]]
Persist = Callable[[list[HistoryMessage]], Awaitable[None]]


@dataclass
class TurnResult:
    text: str
    usage: Usage = field(default_factory=Usage)
    iterations: int = 0
    stopped_at_limit: bool = False
    model: str | None = None
    # Set when a stream limit (llm.call_deadline, idle_timeout, max_output_chars) cut the reply off.
    cut_off: StreamCutOff | None = None


MAX_ITERATIONS_MESSAGE = (
    "I stopped after {n} steps without finishing (the max_iterations limit). "
    "Tell me to continue if you want me to go on."
)

# Said, and saved as the reply, when the model answers with neither text nor tool calls: the user never
# waits on silence, and the history never holds an empty answer. Keyed by the finish reason.
EMPTY_REPLY_MESSAGES = {
    "length": "The model used up its output tokens (llm.max_tokens) before writing a reply.",
    "content_filter": "The model's content filter withheld the reply.",
}
EMPTY_REPLY_MESSAGE = "The model sent back an empty reply. Please try again."


async def _no_emit(event: AgentEvent) -> None:
    return None


class Agent:
    def __init__(
        self,
        llm: LLM,
        tools: ToolRegistry,
        context: ContextBuilder,
        *,
        hooks: Hooks | None = None,
        max_iterations: int = 20,
        context_tokens: int = 128_000,
        reply_reserve_tokens: int = 4_096,
        limits: StreamLimits | None = None,
    ) -> None:
        # Every call is bounded, so a stream that never ends cannot hold the turn and its slot.
        self.llm = with_limits(llm, limits or StreamLimits())
        self.tools = tools
        self.context = context
        self.hooks = hooks or Hooks()
        self.max_iterations = max_iterations
        self.context_tokens = context_tokens
        self.reply_reserve_tokens = reply_reserve_tokens

    async def run(
        self,
        ctx: TurnContext,
        history: list[HistoryMessage],
        message: HumanMessage,
        *,
        emit: Emit = _no_emit,
        persist: Persist | None = None,
    ) -> TurnResult:
        token = current_turn.set(ctx)
        try:
            return await self._run(ctx, history, message, emit, persist)
        finally:
            current_turn.reset(token)

    async def _run(
        self,
        ctx: TurnContext,
        history: list[HistoryMessage],
        message: HumanMessage,
        emit: Emit,
        persist: Persist | None,
    ) -> TurnResult:
        turn: list[HistoryMessage] = [message]
        pending: list[HistoryMessage] = [message]  # not yet persisted

        async def save() -> None:
            if persist and pending:
                batch = pending[:]
                pending.clear()
                await persist(batch)

        result = TurnResult(text="")
        await self.hooks.fire("before_agent", ctx, turn)
        texts: list[str] = []
        partial: list[str] = []
        try:
            system = SystemMessage(content=await self.context.system_prompt())
            budget = self.context_tokens - self.reply_reserve_tokens - estimate_tokens(system)
            for iteration in range(1, self.max_iterations + 1):
                result.iterations = iteration
                prompt: list[HistoryMessage] = [system, *fit_to_budget([*history, *turn], budget)]
                await self.hooks.fire("before_llm", ctx, prompt)
                partial.clear()
                calls: list[ToolCall] = []
                usage = Usage()
                finish = "stop"
                try:
                    # Closed on the way out even when emit() is cancelled (/stop): no HTTP stream is left open.
                    async with aclosing(self.llm.stream(prompt, self.tools.schemas())) as stream:
                        async for chunk in stream:
                            if isinstance(chunk, TextChunk):
                                if chunk.text:
                                    partial.append(chunk.text)
                                    await emit(TextDelta(chunk.text))
                            elif isinstance(chunk, ToolCallChunk):
                                calls.append(chunk.call)
                            elif isinstance(chunk, UsageChunk):
                                usage = usage + chunk.usage
                            elif isinstance(chunk, FinishChunk):
                                finish = chunk.reason
                except StreamCutOff as exc:
                    log.warning("reply cut off in %s: %s", ctx.session_key, exc)
                    result.cut_off = exc
                    # The reply is incomplete: its tool calls are dropped (none runs, none is left without
                    # a result), the text shown so far stays and the note says why it ends there.
                    calls = []
                    note = ("\n\n" if partial else "") + exc.user_message
                    partial.append(note)
                    await emit(TextDelta(note))
                if not calls and not "".join(partial).strip():
                    note = EMPTY_REPLY_MESSAGES.get(finish, EMPTY_REPLY_MESSAGE)
                    partial.append(note)
                    await emit(TextDelta(note))
                result.usage = result.usage + usage
                result.model = getattr(self.llm, "last_model", None) or self.llm.label
                ai = AIMessage(content="".join(partial), tool_calls=calls, model=result.model, usage=usage)
                partial.clear()
                await self.hooks.fire("after_llm", ctx, ai)
                if ai.content:
                    texts.append(ai.content)
                turn.append(ai)
                if not calls:
                    pending.append(ai)
                    await save()
                    result.text = "\n\n".join(texts)
                    return result
                if ai.content:
                    await emit(BlockEnd())
                    partial.append(ai.content)  # kept if the turn is cancelled during the tools
                results = await self._run_tools(ctx, calls, emit)
                partial.clear()
                turn.extend(results)
                # The call and its results are persisted together: history never holds one without the other.
                pending.extend([ai, *results])
                await save()
            result.stopped_at_limit = True
            note = MAX_ITERATIONS_MESSAGE.format(n=self.max_iterations)
            await emit(TextDelta(note))
            texts.append(note)
            final = AIMessage(content=note, model=result.model)
            turn.append(final)
            pending.append(final)
            await save()
            result.text = "\n\n".join(texts)
            return result
        except asyncio.CancelledError:
            # Keep what the user already saw; shielded so the save itself is not cancelled.
            if partial:
                pending.append(AIMessage(content="".join(partial) + " [interrupted]", model=result.model))
            if persist and pending:
                await asyncio.shield(persist(pending[:]))
            raise
        except BaseException:
            if persist and pending:
                await asyncio.shield(persist(pending[:]))
            raise
        finally:
            await self.hooks.fire("after_agent", ctx, result)

    async def _run_tools(self, ctx: TurnContext, calls: list[ToolCall], emit: Emit) -> list[ToolMessage]:
        async def one(call: ToolCall) -> ToolMessage:
            await emit(ToolStarted(call))
            outcome = await self.hooks.gate_tool(ctx, call)
            if outcome is None:
                outcome = await self.tools.call(ctx, call.name, call.arguments)
            await self.hooks.fire("after_tool", ctx, call, outcome)
            await emit(ToolFinished(call, outcome))
            return ToolMessage(tool_call_id=call.id, name=call.name, content=outcome.content, is_error=outcome.is_error)

        return list(await asyncio.gather(*(one(c) for c in calls)))
