"""Pipeline overhead: what the framework itself costs per message, with the LLM taken out.

The LLM here is an in-process model that answers instantly (a few text chunks), so every millisecond
measured is spent in operator-use: channel -> bus -> orchestrator (auth, lanes, session load/append) ->
agent (system prompt from a realistic workspace, 20 tool schemas, truncation) -> bus -> gateway
(stream editor) -> channel.

Prints overhead p50/p99 (one chat, one message at a time), messages/s with 1, 10 and 100 concurrent
chats, and framework CPU ms per message; the last line is one JSON object of those figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel, Field

from operator_use.agent.tools import Tool
from operator_use.app import App
from operator_use.channels.base import Capabilities, Channel, ChannelConfig
from operator_use.config import load_config
from operator_use.messages import Address, IncomingMessage, TextPart, Usage
from operator_use.providers.llm.base import LLM, LLMChunk, TextChunk, ToolSchema, UsageChunk

REPLY = ["Sure, ", "here is ", "the answer ", "you asked ", "for."]


class InstantLLM(LLM):
    provider = "instant"

    async def stream(self, messages: Sequence, tools: Sequence[ToolSchema] = ()) -> AsyncIterator[LLMChunk]:  # type: ignore[override]
        for piece in REPLY:
            yield TextChunk(piece)
        yield UsageChunk(Usage(input_tokens=1000, output_tokens=10))


class BenchChannel(Channel):
    name = "bench"
    capabilities = Capabilities(can_edit=True, max_length=4096, edit_interval=0.0)

    def __init__(self, config: ChannelConfig | None = None) -> None:
        super().__init__(config or ChannelConfig(enabled=True, allow_from=["*"]))
        self.done: dict[str, asyncio.Future[float]] = {}
        self._ids = 0

    async def connect(self) -> None:
        return None

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self._ids += 1
        return str(self._ids)

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        return None

    async def finalize(self, address: Address, message_id: str) -> None:
        future = self.done.get(address.chat_id)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    async def ask(self, chat: str, text: str) -> float:
        """Send one message and return the seconds until its reply was finalized."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.done[chat] = future
        start = time.perf_counter()
        await self.emit(IncomingMessage(channel=self.name, chat_id=chat, user_id="u", parts=[TextPart(text=text)]))
        end = await future
        return end - start


def make_tools(n: int = 20) -> list[Tool]:
    tools = []
    for i in range(n):

        class Params(BaseModel):
            path: str = Field(description="A path inside the workspace")
            limit: int = Field(100, description="How many lines at most")
            recursive: bool = Field(False, description="Descend into folders")
            pattern: str | None = Field(None, description="A glob pattern to filter names")

        Params.__name__ = f"Tool{i}Params"
        tools.append(
            Tool(
                f"tool_{i}",
                f"Benchmark tool number {i}: does nothing useful but has a schema.",
                Params,
                lambda ctx, p: "ok",
            )
        )
    return tools


def realistic_workspace(root: Path) -> None:
    from operator_use.workspace import ensure_workspace

    ensure_workspace(root)
    # A user who has used the agent for a while: a few KB of notes and memory.
    (root / "USER.md").write_text("# User\n\n" + "The user prefers concise answers in English. " * 40)
    (root / "memory" / "MEMORY.md").write_text("# Memory\n\n" + "- a remembered fact about a project\n" * 60)
    for name in ("git", "deploy", "notes"):
        skill = root / "skills" / name
        skill.mkdir(parents=True, exist_ok=True)
        (skill / "SKILL.md").write_text(f"---\ndescription: how to use {name}\n---\n# {name}\n")


async def run_bench() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        realistic_workspace(home / "workspace")
        config = load_config(home=home, agent={"max_concurrent_turns": 100, "workspace": home / "workspace"})
        channel = BenchChannel()
        async with App(config, channels=[channel], llm=InstantLLM("instant"), tools=make_tools()):
            for i in range(50):  # warm up caches (prompt, sessions, schemas)
                await channel.ask(f"warm{i % 5}", "hello")

            latencies = []
            cpu0 = time.process_time()
            n_serial = 500
            for i in range(n_serial):
                latencies.append(await channel.ask(f"serial{i % 20}", f"message {i}"))
            cpu_ms = (time.process_time() - cpu0) * 1000 / n_serial
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000

            rates = {}
            for concurrency in (1, 10, 100):
                per_chat = max(3, 600 // concurrency)

                async def chat_loop(c: int, per_chat: int = per_chat, concurrency: int = concurrency) -> None:
                    for j in range(per_chat):
                        await channel.ask(f"c{concurrency}-{c}", f"message {j}")

                start = time.perf_counter()
                await asyncio.gather(*(chat_loop(c) for c in range(concurrency)))
                rates[concurrency] = concurrency * per_chat / (time.perf_counter() - start)
    return {
        "overhead_p50_ms": round(p50, 3),
        "overhead_p99_ms": round(p99, 3),
        "msgs_per_s_c1": round(rates[1], 1),
        "msgs_per_s_c10": round(rates[10], 1),
        "msgs_per_s_c100": round(rates[100], 1),
        "framework_cpu_ms_per_msg": round(cpu_ms, 3),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run_bench())
    print("pipeline overhead, instant in-process LLM, realistic prompt, 20 tool schemas")
    print(f"  overhead per message   p50 {figures['overhead_p50_ms']:.3f} ms   p99 {figures['overhead_p99_ms']:.3f} ms")
    for c in (1, 10, 100):
        print(f"  throughput, {c:>3} chats   {figures[f'msgs_per_s_c{c}']:.1f} messages/s")
    verdict = "meets" if figures["framework_cpu_ms_per_msg"] < 5 else "MISSES"
    print(f"  framework CPU          {figures['framework_cpu_ms_per_msg']:.3f} ms/message ({verdict} the 5 ms target)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
