"""ask_user: the agent asks a question in the chat and waits for the answer.

The question goes to the turn's chat; the next message of that conversation from the same person is the
answer. It is taken by an orchestrator interceptor, so it never starts a new turn (the conversation's
lane is busy with the waiting turn anyway). Commands (/stop, /approve...) are not answers: they keep
working while a question waits.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import BaseModel, Field

from ..agent.tools import Tool, ToolError
from ..agent.turn import TurnContext
from ..messages import IncomingMessage, TextPart
from ..orchestrator.commands import parse_command

log = logging.getLogger(__name__)


@dataclass
class _Question:
    user_id: str
    answer: asyncio.Future[str]


class AskUserParams(BaseModel):
    question: str = Field(description="The question, as the user will read it.")


class AskUser:
    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = timeout
        self._waiting: dict[str, _Question] = {}

    def waiting(self, session_key: str) -> bool:
        return session_key in self._waiting

    async def intercept(self, message: IncomingMessage) -> bool:
        question = self._waiting.get(message.key)
        if question is None or question.answer.done() or message.user_id != question.user_id:
            return False
        if message.text and parse_command(message.text) is not None:
            return False
        parts = [
            p.text if isinstance(p, TextPart) else f"[{p.type}" + (f" {p.name}]" if p.type == "file" else "]")
            for p in message.parts
        ]
        question.answer.set_result("\n".join(x for x in parts if x) or "(an empty message)")
        return True

    async def ask(self, ctx: TurnContext, p: AskUserParams) -> str:
        if ctx.send_text is None:
            raise ToolError("there is no chat to ask in")
        if ctx.session_key in self._waiting:
            raise ToolError("a question is already waiting for an answer in this conversation")
        question = _Question(ctx.user_id, asyncio.get_running_loop().create_future())
        self._waiting[ctx.session_key] = question
        try:
            await ctx.send_text(p.question)
            try:
                answer = await asyncio.wait_for(asyncio.shield(question.answer), self.timeout)
            except TimeoutError:
                log.info("ask_user in %s: no answer after %.0f s", ctx.session_key, self.timeout)
                return f"The user did not answer within {self.timeout:g} seconds."
        finally:
            self._waiting.pop(ctx.session_key, None)
        return f"The user answered: {answer}"

    def tools(self) -> list[Tool]:
        return [
            Tool(
                "ask_user",
                "Ask the user a question in the chat and wait for the answer. Use it when you "
                "need a decision or information only the user has.",
                AskUserParams,
                self.ask,
                risk="low",
            )
        ]
