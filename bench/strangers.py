"""Strangers flood: how long an allowed user waits for a reply while unknown senders flood the agent.

One channel with pairing on and a `rejection_message`, the real pairing store on disk (fsynced writes),
an in-process LLM that answers instantly. 2,000 messages from strangers arrive as fast as the channel
can emit them (half from 1,000 distinct fake accounts, half from 20 accounts that keep writing); after
every 20 of them the owner sends a message in a chat of their own. Measured: the owner's reply latency,
from the platform handing the message over to the reply being finalized (p50/p99 over 100 replies),
how many times the pairing store was written, and what the strangers got.

    .venv/bin/python bench/strangers.py

The last line is one JSON object: allowed_reply_p50_ms, allowed_reply_p99_ms, stranger_msgs, store_writes,
stranger_replies, strangers_ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The pipeline bench's instant model and recording channel (this folder is on the path when run as a script).
from pipeline import BenchChannel, InstantLLM

from operator_use.app import App
from operator_use.channels.base import ChannelConfig
from operator_use.config import load_config
from operator_use.messages import Address, IncomingMessage, TextPart

STRANGER_MSGS = 2000
OWNER_EVERY = 20  # one owner message after this many stranger messages


class FloodChannel(BenchChannel):
    """The pipeline bench's channel, with pairing on and a rejection message, counting what strangers get."""

    def __init__(self) -> None:
        super().__init__(
            ChannelConfig(
                enabled=True, allow_from=["owner"], pairing=True, rejection_message="Sorry, this agent is private."
            )
        )
        self.stranger_replies = 0

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        if not address.chat_id.startswith("owner"):
            self.stranger_replies += 1
        return await super().send(address, text, reply_to=reply_to, plain=plain)

    async def say(self, user: str, chat: str, text: str) -> None:
        await self.emit(
            IncomingMessage(channel=self.name, chat_id=chat, user_id=user, user_name=user, parts=[TextPart(text=text)])
        )
        # Messages come off a socket, one read each: let the loop run in between, or this producer alone
        # (a bus with room never makes it wait) would hold the loop for the whole flood.
        await asyncio.sleep(0)

    async def owner_asks(self, chat: str) -> asyncio.Future[float]:
        """Send the owner's message; the future resolves to the seconds until its reply was finalized."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[float] = loop.create_future()
        self.done[chat] = finished
        start = time.perf_counter()
        await self.say("owner", chat, "anything new?")
        latency: asyncio.Future[float] = loop.create_future()
        finished.add_done_callback(lambda f: latency.set_result(f.result() - start))
        return latency


async def run_bench() -> dict[str, float | int | None]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        config = load_config(home=home, agent={"workspace": home / "workspace", "max_concurrent_turns": 100})
        channel = FloodChannel()
        async with App(config, channels=[channel], llm=InstantLLM("instant"), tools=[]) as app:
            await (await channel.owner_asks("owner-warm"))  # warm up: workspace prompt, session store
            replies: list[asyncio.Future[float]] = []
            for i in range(STRANGER_MSGS):
                who = f"fake{i}" if i % 2 else f"again{i % 40}"
                await channel.say(who, who, "let me in")
                if i % OWNER_EVERY == OWNER_EVERY - 1:
                    replies.append(await channel.owner_asks(f"owner{i}"))
            latencies = sorted(await asyncio.gather(*replies))
            store = app.protection.access.pairing.store if app.protection is not None else None
            desk = getattr(app.orchestrator, "strangers", None)
            if desk is not None:
                await desk.join()
            writes = getattr(store, "writes", None)
            ignored = desk.limited + desk.dropped if desk is not None else 0
    return {
        "allowed_reply_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "allowed_reply_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "stranger_msgs": STRANGER_MSGS,
        "store_writes": writes,
        "stranger_replies": channel.stranger_replies,
        "strangers_ignored": ignored,
    }


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the flood's warnings (codes issued, ignored counts) are expected
    figures = asyncio.run(run_bench())
    print(
        f"allowed user's reply under a flood of {figures['stranger_msgs']} stranger messages "
        f"(pairing on, rejection_message set, instant LLM)"
    )
    print(
        f"  reply latency          p50 {figures['allowed_reply_p50_ms']} ms   p99 {figures['allowed_reply_p99_ms']} ms"
    )
    print(f"  pairing store writes   {figures['store_writes']}")
    print(f"  strangers answered     {figures['stranger_replies']}   ignored {figures['strangers_ignored']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
