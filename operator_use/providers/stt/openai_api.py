"""Speech-to-text through an OpenAI-compatible `/v1/audio/transcriptions` endpoint (OpenAI, Groq, a local
server such as faster-whisper-server or LocalAI), with the official SDK.

The note is decoded locally first: corrupt audio and notes over the length limit are answered without
a request, and the server only ever receives audio we could read ourselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pydantic import SecretStr

from ...messages import AudioPart
from .base import UNCLEAR, TranscriptionError, too_long

log = logging.getLogger(__name__)

# What the endpoint accepts is decided by the file name's extension.
_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "audio/flac": "flac",
}


class OpenAITranscriber:
    def __init__(
        self,
        *,
        model: str | None = None,
        api_key: SecretStr | str | None = None,
        base_url: str | None = None,
        language: str | None = None,
        timeout: float = 120.0,
        max_seconds: float = 900.0,
        prompt: str | None = None,
        max_retries: int = 2,
    ) -> None:
        self.model = model or "whisper-1"
        self.prompt = prompt or None
        self._api_key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self.base_url = base_url
        self.language = language
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_seconds = max_seconds
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            # A local server often needs no key, but the SDK insists on one.
            key = self._api_key or os.environ.get("OPENAI_API_KEY") or ("none" if self.base_url else None)
            if key is None:
                raise TranscriptionError(
                    "Speech-to-text is misconfigured (no API key); the owner needs to "
                    "set voice.stt.api_key or OPENAI_API_KEY."
                )
            self._client = AsyncOpenAI(
                api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
            )
        return self._client

    async def transcribe(self, audio: AudioPart) -> str:
        from ...audio.codec import AudioDecodeError, AudioTooLong, decode_pcm

        try:
            pcm = await asyncio.to_thread(decode_pcm, audio.data, max_seconds=self.max_seconds)
        except AudioTooLong as exc:
            raise too_long(exc.limit_s) from exc
        except AudioDecodeError as exc:
            log.info("undecodable voice note (%d bytes): %s", len(audio.data), exc)
            raise TranscriptionError(UNCLEAR) from exc
        if pcm.size == 0:
            return ""
        import openai

        name = "voice." + _EXTENSIONS.get(audio.mime.split(";")[0].strip().lower(), "ogg")
        extra: dict[str, Any] = {"language": self.language} if self.language else {}
        if self.prompt:
            extra["prompt"] = self.prompt
        try:
            result = await self._get_client().audio.transcriptions.create(
                model=self.model, file=(name, audio.data, audio.mime), **extra
            )
        except openai.APIError as exc:
            log.warning("transcription API failed: %s", exc)
            raise TranscriptionError(
                "I couldn't transcribe that voice note: the speech-to-text service "
                "failed. Please try again in a moment."
            ) from exc
        return str(getattr(result, "text", "") or "").strip()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
