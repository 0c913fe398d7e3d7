"""The speech-to-text contract: a voice note in, its text out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ...messages import AudioPart

UNCLEAR = "I couldn't make out that voice note."


class TranscriptionError(Exception):
    """A voice note that cannot be transcribed. The message is written for the user and is sent as is."""


@runtime_checkable
class Transcriber(Protocol):
    async def transcribe(self, audio: AudioPart) -> str:
        """The words spoken in `audio` ("" when there are none). Raises TranscriptionError."""
        ...


def too_long(limit_s: float) -> TranscriptionError:
    minutes = limit_s / 60
    limit = f"{minutes:g} minutes" if minutes >= 1 else f"{limit_s:g} seconds"
    return TranscriptionError(
        f"That voice note is too long: I listen to at most {limit}. Please send a shorter one, or type it."
    )
