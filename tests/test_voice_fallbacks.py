"""When a reply cannot be spoken: `tts: auto` without PyAV picks nothing and says why; a failing synthesis
or a voice note the platform refuses is logged and the chat is told once, until a voice note gets through.

Real parts: the App with a test channel, the real OpenAI SDK against the fake LLM server, espeak-ng and
PyAV, and (for the voice turns) the bundled Whisper model hearing notes espoken by espeak-ng."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from operator_use.app import App
from operator_use.channels.base import ChannelError
from operator_use.config import load_config
from operator_use.messages import Address, AudioPart
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.providers.tts.espeak import EspeakSynthesizer
from operator_use.voice.service import CANNOT_SPEAK, PLATFORM_REFUSED
from operator_use.voice.setup import NO_PYAV

from .fakes.audio_server import FakeAudioServer
from .fakes.llm_server import FakeLLMServer
from .support.chat import ChatChannel
from .support.deps import require_binary, require_module
from .support.pipeline import TappedBus, scripted_responder
from .support.speech import espeak_pcm, need_voice_stack, voice_note

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)  # Whisper runs at the lowest CPU priority: a bound against hangs only

# Builds the voice service from `voice` config in a fresh interpreter, optionally with `av` unimportable
# (a meta-path finder refusing it, as a missing package would), and prints what it chose and logged.
PROBE = textwrap.dedent(
    """
    import json, logging, sys, tempfile
    from pathlib import Path

    class NoPyAV:
        def find_spec(self, name, path=None, target=None):
            if name == "av" or name.startswith("av."):
                raise ModuleNotFoundError("No module named 'av' (blocked by the test)", name=name)
            return None

    if sys.argv[1] == "block":
        sys.meta_path.insert(0, NoPyAV())
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)
    from operator_use.voice.config import VoiceConfig
    from operator_use.voice.setup import build_voice

    config = VoiceConfig.model_validate({"stt": {"provider": "none"}, "tts": {"provider": sys.argv[2]}})
    service = build_voice(config, Path(tempfile.mkdtemp()), can_speak=lambda channel: True)
    print(json.dumps({
        "synthesizer": type(service.synthesizer).__name__ if service.synthesizer else None,
        "logs": records,
        "av_imported": "av" in sys.modules,
    }))
    """
)


def probe(*args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_auto_tts_without_pyav_picks_nothing_and_says_why() -> None:
    require_module("av")
    require_binary("espeak-ng")
    # With PyAV, auto picks a synthesizer (Piper when installed, else espeak-ng)...
    usual = probe("allow", "auto")
    assert usual["synthesizer"] in ("PiperSynthesizer", "EspeakSynthesizer"), usual
    # ... without it, none: replies stay text, and one log line says why.
    blocked = probe("block", "auto")
    assert blocked["synthesizer"] is None, blocked
    assert blocked["logs"].count(NO_PYAV) == 1, blocked["logs"]
    assert "voice: speech-to-text off, text-to-speech off" in blocked["logs"]
    assert not blocked["av_imported"]
    # espeak-ng named explicitly cannot work without PyAV either.
    explicit = probe("block", "espeak")
    assert explicit["synthesizer"] is None and explicit["logs"].count(NO_PYAV) == 1, explicit


class RefusingVoiceChannel(ChatChannel):
    """A voice-capable chat whose platform refuses voice notes until `refusing` is cleared."""

    refusing = True

    async def send_voice(self, address: Address, audio: AudioPart, *, reply_to: str | None = None) -> str:
        if self.refusing:
            raise ChannelError("voice messages are forbidden in this chat", permanent=True)
        return await super().send_voice(address, audio, reply_to=reply_to)


def voice_app(home: Path, channel: ChatChannel, server: FakeLLMServer, **voice: Any) -> App:
    config = load_config(home=home, agent={"workspace": home / "workspace"}, voice=voice)
    return App(
        config,
        channels=[channel],
        llm=OpenAILLM("fake-gpt", "k", base_url=server.openai_base_url),
        tools=[],
        bus=TappedBus(),
    )


def notices(channel: ChatChannel) -> list[str]:
    return [t for t in channel.texts() if t.startswith("I could not speak this reply")]


def conversation(channel: ChatChannel) -> list[str]:
    """What the chat shows, without the /voice answers `settle` asked for."""
    return [t for t in channel.texts() if not t.startswith("Voice replies")]


async def always(channel: ChatChannel) -> None:
    await channel.say("/voice always")
    await channel.wait_for(lambda: any(t.startswith("Voice replies: always") for t in channel.texts()))


async def settle(app: App, channel: ChatChannel) -> None:
    """Until everything said so far has reached the chat: the turns end, then two round trips through the
    chat's gateway lane (a notice published while the lane sends a voice note queues behind the first)."""
    await app.orchestrator.lanes.idle()
    for _ in range(2):
        before = sum(t.startswith("Voice replies here") for t in channel.texts())
        await channel.say("/voice")
        await channel.wait_for(
            lambda before=before: sum(t.startswith("Voice replies here") for t in channel.texts()) > before
        )


async def test_failing_synthesis_tells_the_user_once_until_a_voice_note_gets_through(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_voice_stack()
    broken = EspeakSynthesizer(binary=str(home / "no-such-espeak"))
    told = CANNOT_SPEAK.format(reason="the speech engine is not set up")
    notes = [voice_note(await espeak_pcm(q)) for q in ("What time is it?", "Is it raining today?")]
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = ChatChannel(voice=True)
        channel.wait_timeout = 240.0
        async with voice_app(home, channel, server, tts={"provider": "espeak"}) as app:
            working = app.voice.synthesizer
            app.voice.synthesizer = broken
            with caplog.at_level(logging.WARNING, logger="operator_use.voice.service"):
                # Two voice turns whose replies cannot be spoken: both answered in text, told once.
                await channel.say("", parts=[notes[0]])
                await channel.wait_for(lambda: len(notices(channel)) == 1)
                await channel.say("", parts=[notes[1]])
                await channel.wait_for(lambda: len(channel.finalized()) == 3)
                await settle(app, channel)
            texts = conversation(channel)
            assert len(texts) == 3 and texts[1] == told, texts
            assert texts[0].startswith("You said:") and texts[2].startswith("You said:"), texts
            assert notices(channel) == [told] and channel.voices == []
            failures = [r for r in caplog.records if r.getMessage().startswith("could not speak the reply")]
            # The detail is in the log only.
            assert len(failures) == 2 and f"{home / 'no-such-espeak'} is not installed" in failures[0].getMessage()

            # Once a voice note gets through, the next failure is worth telling again.
            await always(channel)
            app.voice.synthesizer = working
            await channel.say("speak now")
            await channel.wait_for(lambda: len(channel.voices) == 1)
            app.voice.synthesizer = broken
            await channel.say("and now?")
            await channel.wait_for(lambda: len(notices(channel)) == 2)
            await settle(app, channel)
            assert conversation(channel)[3:] == ["You said: speak now", "You said: and now?", told]


async def test_a_voice_note_the_platform_refuses_tells_the_user_once(home: Path) -> None:
    require_module("av")
    require_binary("espeak-ng")
    told = CANNOT_SPEAK.format(reason=PLATFORM_REFUSED)
    async with FakeLLMServer(responder=scripted_responder) as server:
        channel = RefusingVoiceChannel(voice=True)
        async with voice_app(home, channel, server, tts={"provider": "espeak"}) as app:
            await always(channel)
            await channel.say("first")
            await channel.wait_for(lambda: len(notices(channel)) == 1)
            await channel.say("second")
            await channel.wait_for(lambda: "You said: second" in channel.texts())
            await settle(app, channel)
            assert conversation(channel) == ["You said: first", told, "You said: second"]

            # Allowed again: the voice note goes out, and a later refusal is told again.
            channel.refusing = False
            await channel.say("third")
            await channel.wait_for(lambda: len(channel.voices) == 1)
            channel.refusing = True
            await channel.say("fourth")
            await channel.wait_for(lambda: len(notices(channel)) == 2)
            await settle(app, channel)
            assert conversation(channel)[3:] == ["You said: third", "You said: fourth", told]


async def test_the_chat_is_told_a_category_once_never_the_error_text(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A speech API refusing every request with an error that quotes the key and a new request id each time.
    key = "sk-live-0123456789abcdef"
    message = "Incorrect API key provided: {key}. Request id: {request_id}"
    async with (
        FakeLLMServer(responder=scripted_responder) as server,
        FakeAudioServer(status=400, error_message=message) as speech,
    ):
        channel = ChatChannel(voice=True)
        tts = {"provider": "openai", "base_url": speech.base_url, "api_key": key}
        async with voice_app(home, channel, server, tts=tts) as app:
            await always(channel)
            with caplog.at_level(logging.WARNING, logger="operator_use.voice.service"):
                for n in range(5):
                    await channel.say(f"message {n}")
                    await channel.wait_for(lambda n=n: f"You said: message {n}" in channel.texts())
                await settle(app, channel)
            # Told once, in fixed words: no key, no request id.
            assert notices(channel) == [CANNOT_SPEAK.format(reason="the speech service refused the request")]
            assert not any(key in t or "req_" in t for t in channel.texts()), channel.texts()
            # The log has each failure's detail, the key masked.
            failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("could not speak")]
            assert len(failures) == 5 and len({f.split("Request id: ")[1] for f in failures}) == 5, failures
            assert not any(key in f for f in failures) and "[REDACTED]" in failures[0], failures
            # One category remembered per chat, whatever the number of failures.
            assert app.voice._told == {"test:c1": "the speech service refused the request"}
