"""Voice notes in the web chat over its real websocket protocol: real speech (espeak-ng) encoded as the
browser's MediaRecorder does (WebM/Opus) -> WebChannel -> orchestrator -> local Whisper -> agent -> real
OpenAI SDK -> fake LLM server -> the reply as text and as an OGG/Opus voice event. The same in a real
Chromium, microphone included, is in tests/test_web_browser.py."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from operator_use.app import App
from operator_use.channels.web.channel import WebChannel
from operator_use.channels.web.config import WebConfig
from operator_use.channels.web.server import audio_frame_limit
from operator_use.config import load_config
from operator_use.messages import AudioPart
from operator_use.providers.llm.openai import OpenAILLM
from operator_use.providers.stt.base import UNCLEAR
from operator_use.providers.stt.local import LocalWhisper

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.speech import assert_heard, encode_as, espeak_pcm, need_voice_stack, ogg_info, silence, words
from .support.web import TOKEN, open_tab

QUESTION = "What is the weather in Paris tomorrow?"
ANSWER = "Sure. The weather in Paris will be sunny tomorrow, with a light breeze."


@pytest.fixture(autouse=True)
def voice_stack() -> None:
    need_voice_stack()


@asynccontextmanager
async def voice_web_app(home: Path, server: FakeLLMServer, **web: Any) -> AsyncIterator[tuple[App, WebChannel]]:
    channel = WebChannel(WebConfig(**{"port": 0, "token": TOKEN, **web}), announce=None)
    config = load_config(home=home, agent={"workspace": home / "workspace"}, voice={"tts": {"provider": "espeak"}})
    async with App(
        config, channels=[channel], llm=OpenAILLM("fake-gpt", "k", base_url=server.openai_base_url), tools=[]
    ) as app:
        yield app, channel


def user_texts(server: FakeLLMServer) -> list[str]:
    return [FakeRequest(api="openai", path="", body=b, headers={}).last_user_text() for b in server.requests]


def audio_frame(data: bytes, mime: str = "audio/webm;codecs=opus") -> dict[str, str]:
    return {"type": "audio", "mime": mime, "data": base64.b64encode(data).decode()}


async def test_a_recorded_voice_note_is_heard_and_answered_with_voice(home: Path) -> None:
    import numpy as np

    pcm = np.concatenate([silence(0.3), await espeak_pcm(QUESTION), silence(0.3)])
    note, mime = encode_as(pcm, "webm")
    assert mime == "audio/webm" and ogg_info(note)[:2] == ("matroska,webm", "opus")
    async with (
        FakeLLMServer(responder=lambda req: Reply(text=ANSWER, chunk_size=8)) as server,
        voice_web_app(home, server) as (app, channel),
        open_tab(channel) as tab,
    ):
        assert channel.capabilities.voice
        await tab.next("history")
        await tab.ws.send_json(audio_frame(note))
        user = await tab.next("user")
        assert user["voice"] is True and user["text"] == "Voice note"
        voice = await tab.next("voice", timeout=120)

        # The transcript reached the model; the text reply streamed before the voice reply came.
        assert {"weather", "paris", "tomorrow"} <= words(user_texts(server)[0]), user_texts(server)
        texts = [e["text"] for e in tab.events if e["type"] in ("send", "edit")]
        assert texts[-1] == ANSWER
        assert any(e["type"] == "finalize" for e in tab.events)
        assert voice["reply_to"] == user["id"] and voice["mime"] == "audio/ogg"
        spoken = base64.b64decode(voice["data"])
        assert ogg_info(spoken) == ("ogg", "opus", 48_000, 1)
        whisper = LocalWhisper()
        try:
            heard = await whisper.transcribe(AudioPart(data=spoken, mime="audio/ogg"))
        finally:
            await whisper.aclose()
        assert {"paris", "sunny", "tomorrow"} <= words(heard), heard
        history = (await app.sessions.load("web:c1")).messages
        assert [m.role for m in history] == ["human", "ai"] and "paris" in words(history[0].content)


async def test_bad_voice_frames_get_error_events(home: Path) -> None:
    limit = 4096
    async with (
        FakeLLMServer([Reply(text="Still here.")]) as server,
        voice_web_app(home, server, max_audio_bytes=limit) as (_app, channel),
        open_tab(channel) as tab,
    ):
        assert (await tab.next("history"))["max_audio_bytes"] == limit
        bad: list[tuple[Any, str]] = [
            ({"type": "audio", "mime": "audio/webm", "data": "!!not base64!!"}, "base64"),
            ({"type": "audio", "mime": "audio/webm", "data": "QUJ"}, "base64"),  # bad padding
            ({"type": "audio", "mime": "audio/webm", "data": "héllo"}, "base64"),
            (audio_frame(b"x" * (limit + 1)), "too big"),
            (audio_frame(b""), "empty"),
            ({"type": "audio", "mime": "text/plain", "data": "QUJD"}, "malformed"),
            ({"type": "audio", "data": "QUJD"}, "malformed"),
            ({"type": "audio", "mime": "audio/webm", "data": 5}, "malformed"),
            (audio_frame(b"x" * 70_000), "too long"),  # beyond both frame limits: not even parsed
        ]
        assert len(base64.b64encode(b"x" * 70_000)) > max(64 * 1024, audio_frame_limit(channel.web_config))
        for frame, error in bad:
            await tab.ws.send_json(frame)
            assert error in (await tab.next("error"))["error"], frame

        # Valid base64 that is not audio: the user is told, the model is not called.
        await tab.ws.send_json(audio_frame(b"this is not audio at all" * 10))
        reply = await tab.next("send", timeout=10)
        assert reply["text"] == UNCLEAR
        # The connection survived all of it.
        await tab.say("hello")
        assert await tab.wait(lambda e: e["type"] == "send" and e["text"] == "Still here.")
        assert len(server.requests) == 1 and user_texts(server) == ["hello"]


def write_wav(pcm: Any, path: Path, rate: int = 48_000) -> float:
    """16 kHz float samples as a 48 kHz 16-bit mono WAV (what Chromium's fake microphone plays best)."""
    import wave

    import numpy as np

    src = np.arange(len(pcm)) / 16_000
    dst = np.arange(int(len(pcm) * rate / 16_000)) / rate
    samples = (np.clip(np.interp(dst, src, pcm), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return len(samples) / rate


@pytest.mark.slow
async def test_mic_button_in_headless_chromium(home: Path, tmp_path: Path) -> None:
    import numpy as np

    from .support.deps import require_binary, require_module
    from .support.web import CHROMIUM_ARGS
    from .test_web_browser import ROOT

    chromium = require_binary("chromium")
    require_module("playwright")
    from playwright.async_api import async_playwright

    from operator_use.audio.codec import decode_pcm

    speech = tmp_path / "question.wav"
    seconds = write_wav(np.concatenate([silence(0.4), await espeak_pcm(QUESTION), silence(0.6)]), speech)
    notes: list[AudioPart] = []

    async def keep_note(message: Any) -> bool:  # sees the note as the channel delivered it; consumes nothing
        notes.extend(p for p in message.parts if isinstance(p, AudioPart))
        return False

    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with (
        FakeLLMServer(responder=lambda req: Reply(text=ANSWER, chunk_size=8)) as server,
        voice_web_app(home, server) as (app, channel),
        async_playwright() as pw,
    ):
        app.orchestrator.interceptors.insert(0, keep_note)
        browser = await pw.chromium.launch(executable_path=chromium, args=args)
        try:
            context = await browser.new_context(viewport={"width": 960, "height": 720})
            page = await context.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            await page.goto(channel.url)
            await page.wait_for_selector("#status[data-state=ok]")
            assert await page.is_enabled("#mic")

            await page.click("#mic")
            await page.wait_for_selector("#mic[data-state=recording]")
            # Let MediaRecorder deliver the whole utterance (the fake microphone plays the file from the start).
            await page.wait_for_function(
                f"() => Number(document.getElementById('mic').dataset.elapsed) >= {int(seconds * 1000) + 300}"
                " && Number(document.getElementById('mic').dataset.bytes) > 0",
                timeout=30_000,
            )
            shots = ROOT / "artifacts"
            shots.mkdir(exist_ok=True)
            await page.screenshot(path=str(shots / "web-voice-recording.png"))
            await page.click("#mic")
            await page.wait_for_selector("#mic[data-state=idle]")
            await page.wait_for_selector(".msg.user.voice >> text=Voice note")

            await page.wait_for_selector(".msg.assistant.done >> text=sunny", timeout=120_000)
            await page.wait_for_selector(".msg.assistant.voice audio", timeout=120_000)
            # The reply's OGG/Opus plays from its blob: URL under the page's CSP.
            await page.wait_for_function(
                "() => document.querySelector('.msg.assistant.voice audio').readyState >= 1"
                " && document.querySelector('.msg.assistant.voice audio').duration > 1"
            )
            await page.screenshot(path=str(shots / "web-voice.png"))
            assert violations == []

            # Chromium's MediaRecorder WebM/Opus decodes with PyAV, and Whisper heard the question.
            assert len(notes) == 1 and notes[0].mime == "audio/webm" and notes[0].voice_note
            assert ogg_info(notes[0].data)[:2] == ("matroska,webm", "opus")
            assert len(decode_pcm(notes[0].data)) / 16_000 == pytest.approx(seconds, abs=1.5)
            # Captured in real time by the browser, the recording differs a little from run to run.
            assert_heard(QUESTION, user_texts(server)[0])

            # Where the browser gives no microphone API (plain http beyond localhost), the button says why.
            bare = await browser.new_context()
            await bare.add_init_script(
                "Object.defineProperty(Navigator.prototype, 'mediaDevices', {get: () => undefined})"
            )
            other = await bare.new_page()
            await other.goto(channel.url)
            await other.wait_for_selector("#mic[data-state=unavailable]")
            assert await other.is_disabled("#mic")
            assert "https or localhost" in (await other.get_attribute("#mic", "title") or "")
        finally:
            await browser.close()
