"""Text-to-speech through an OpenAI-compatible `/v1/audio/speech` endpoint, with the official SDK.

The audio is asked for as Opus and re-encoded locally, so whatever the server really returns (some send
MP3 or WAV whatever was asked) reaches the user as a mono 48 kHz OGG/Opus voice note with a known length.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pydantic import SecretStr

from ...messages import AudioPart
from .base import SynthesisError, voice_note_from_file

log = logging.getLogger(__name__)


class OpenAISynthesizer:
    def __init__(
        self,
        *,
        model: str | None = None,
        voice: str | None = None,
        api_key: SecretStr | str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        self.model = model or "tts-1"
        self.voice = voice or "alloy"
        self._api_key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            key = self._api_key or os.environ.get("OPENAI_API_KEY") or ("none" if self.base_url else None)
            if key is None:
                raise SynthesisError(
                    "no API key for text-to-speech (voice.tts.api_key or OPENAI_API_KEY)", kind="not_set_up"
                )
            self._client = AsyncOpenAI(
                api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
            )
        return self._client

    async def synthesize(self, text: str) -> AudioPart:
        import openai

        try:
            response = await self._get_client().audio.speech.create(
                model=self.model, voice=self.voice, input=text, response_format="opus"
            )
        except openai.APIStatusError as exc:
            raise SynthesisError(f"speech API failed: {exc}", kind="service_refused") from exc
        except openai.APIError as exc:  # no answer: connection refused, timed out
            raise SynthesisError(f"speech API failed: {exc}", kind="service_unreachable") from exc
        return await asyncio.to_thread(voice_note_from_file, response.content)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
