"""Streaming bench: how many platform calls a long streamed answer costs on each channel profile.

Simulates, on virtual time (FakeClock), a 2,000-token answer at 50 tokens/s (~40 s; ~4 chars per token,
with a fenced code block in the middle) through the real StreamEditor, for each channel profile.

Target per profile: at most one platform call per edit interval, and the final call within one interval
of the last token. Prints a table, then, as the very last line, one JSON object with the figures.

    .venv/bin/python bench/streaming.py
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from dataclasses import dataclass

from operator_use.channels.base import Capabilities, Channel
from operator_use.gateway.clock import FakeClock
from operator_use.gateway.formatting import render_markdown
from operator_use.gateway.stream_editor import StreamEditor
from operator_use.messages import Address, StreamDelta, StreamDone, StreamStart

TOKENS = 2000
TOKENS_PER_S = 50.0
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Profile:
    name: str
    caps: Capabilities


def _profiles() -> list[Profile]:
    """Each platform's real declared capabilities (the channel modules import no SDK at import time)."""
    from operator_use.channels.cli import TerminalChannel
    from operator_use.channels.discord.channel import DiscordChannel
    from operator_use.channels.mqtt.channel import MQTTChannel
    from operator_use.channels.slack.channel import SlackChannel
    from operator_use.channels.telegram.channel import TelegramChannel
    from operator_use.channels.twitch.channel import TwitchChannel
    from operator_use.channels.web.channel import WebChannel

    profiles = [
        Profile(cls.name if cls is not TerminalChannel else "terminal", cls.capabilities)
        for cls in (TelegramChannel, DiscordChannel, SlackChannel, WebChannel, TerminalChannel)
    ]
    # Twitch's send rate comes from its config (20 messages per 30 s for a normal bot).
    profiles.append(Profile("twitch", TwitchChannel.capabilities.model_copy(update={"rate_limit": (20, 30.0)})))
    profiles.append(Profile("mqtt", MQTTChannel.capabilities))
    return profiles


PROFILES = _profiles()


class BenchChannel(Channel):
    """Records (kind, virtual time, text) of every platform call; never fails."""

    def __init__(self, profile: Profile, clock: FakeClock) -> None:
        super().__init__(name=profile.name)
        self.capabilities = profile.caps
        self.clock = clock
        self.calls: list[tuple[str, float, str]] = []
        self.messages: dict[str, str] = {}  # id -> latest text
        self._n = 0

    async def connect(self) -> None:
        return None

    def format(self, markdown: str) -> str:
        return render_markdown(markdown, self.capabilities.formatting)

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self.calls.append(("send", self.clock.now(), text))
        self._n += 1
        self.messages[str(self._n)] = text
        return str(self._n)

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        self.calls.append(("edit", self.clock.now(), text))
        self.messages[message_id] = text


def answer_tokens() -> list[str]:
    """~8,000 chars of markdown (prose, a list, a code block mid-way), cut into ~4-char tokens."""
    para = (
        "The gateway streams each reply into a single message and edits it in place, so the user "
        "watches the answer grow without the platform being flooded with calls. "
    )
    code = (
        "```python\n"
        + "".join(f"def step_{i}(x):\n    return x * {i} + 1  # <{i}> & more\n" for i in range(30))
        + "```"
    )
    parts: list[str] = []
    i = 0
    while sum(map(len, parts)) < TOKENS * CHARS_PER_TOKEN:
        if i == 12:
            parts.append(code + "\n\n")
        elif i % 5 == 4:
            parts.append("- **point** one\n- point `two`\n\n")
        else:
            parts.append(f"{i}. {para}{para}\n\n")
        i += 1
    text = "".join(parts)[: TOKENS * CHARS_PER_TOKEN]
    return [text[j : j + CHARS_PER_TOKEN] for j in range(0, len(text), CHARS_PER_TOKEN)]


async def run_profile(profile: Profile, tokens: list[str]) -> dict[str, float | int | bool]:
    clock = FakeClock()
    channel = BenchChannel(profile, clock)
    editor = StreamEditor(clock)
    address = Address(channel=profile.name, chat_id="bench")

    async def produce() -> float:
        await editor.handle(channel, StreamStart(address=address, stream_id="b"))
        for n, tok in enumerate(tokens):
            if n:
                await clock.sleep(1.0 / TOKENS_PER_S)
            await editor.handle(channel, StreamDelta(address=address, stream_id="b", delta=tok))
        last_token_at = clock.now()  # the model finishes right after its last token
        await editor.handle(channel, StreamDone(address=address, stream_id="b"))
        return last_token_at

    wall = time.perf_counter()
    last_token_at = await clock.drive(produce())
    wall = time.perf_counter() - wall

    interval = profile.caps.edit_interval
    times = [at for _, at, _ in channel.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    duration = last_token_at  # the stream starts at t=0
    budget = math.ceil(duration / interval + 1e-9) + 1  # one call per interval, plus the final one
    final_delay = times[-1] - last_token_at if times else math.inf
    spaced = all(g >= interval - 1e-9 for g in gaps)
    # Nothing lost: for pass-through formats the messages hold exactly the answer (whitespace aside).
    complete: bool | None = None
    if profile.caps.formatting in ("markdown", "discord"):
        complete = "".join("".join(channel.messages.values()).split()) == "".join("".join(tokens).split())
    ok = spaced and len(times) <= budget and final_delay <= interval + 1e-9 and complete is not False
    return {
        "calls": len(times),
        "sends": sum(1 for k, _, _ in channel.calls if k == "send"),
        "final_delay_ms": round(final_delay * 1000, 1) + 0.0,  # + 0.0: no "-0.0"
        "edit_interval_ms": round(interval * 1000, 1),
        "budget": budget,
        "min_gap_ms": round(min(gaps) * 1000, 1) if gaps else 0.0,
        "wall_ms": round(wall * 1000, 1),
        "complete": complete,
        "meets_target": ok,
    }


async def main() -> None:
    tokens = answer_tokens()
    chars = sum(map(len, tokens))
    print(
        f"answer: {len(tokens)} tokens, {chars} chars, {TOKENS_PER_S:.0f} tokens/s "
        f"(~{len(tokens) / TOKENS_PER_S:.0f} s virtual)\n"
    )
    header = (
        f"{'profile':<10}{'calls':>7}{'msgs':>6}{'budget':>8}{'interval ms':>13}{'min gap ms':>12}"
        f"{'final delay ms':>16}{'wall ms':>9}{'complete':>10}  target"
    )
    print(header)
    print("-" * len(header))
    results: dict[str, dict[str, float | int | bool]] = {}
    for profile in PROFILES:
        r = await run_profile(profile, tokens)
        results[profile.name] = r
        print(
            f"{profile.name:<10}{r['calls']:>7}{r['sends']:>6}{r['budget']:>8}{r['edit_interval_ms']:>13}"
            f"{r['min_gap_ms']:>12}{r['final_delay_ms']:>16}{r['wall_ms']:>9}"
            f"{ {True: 'yes', False: 'NO', None: 'n/a'}[r['complete']]:>10}  "
            f"{'meets' if r['meets_target'] else 'MISSES'}"
        )
    print("\ntarget: at most one call per edit interval (min gap >= interval, calls <= budget) and the final")
    print("call within one interval of the last token.")
    summary = {
        name: {"calls": r["calls"], "final_delay_ms": r["final_delay_ms"], "edit_interval_ms": r["edit_interval_ms"]}
        for name, r in results.items()
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
