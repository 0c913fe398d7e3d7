"""The text-to-speech contract: text in, an OGG/Opus voice note out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from ...messages import AudioPart

if TYPE_CHECKING:
    import numpy as np


# What went wrong, in words the chat may be told: the message itself (an API's error body may quote a key,
# a request id or a path) goes to the log only.
SynthesisFailure = Literal["engine", "not_set_up", "service_refused", "service_unreachable"]


class SynthesisError(Exception):
    """Speech could not be produced; the text reply has been sent already, so this is only logged."""

    def __init__(self, message: str, *, kind: SynthesisFailure = "engine") -> None:
        super().__init__(message)
        self.kind: SynthesisFailure = kind


@runtime_checkable
class Synthesizer(Protocol):
    async def synthesize(self, text: str) -> AudioPart:
        """`text` spoken, as an OGG/Opus mono 48 kHz voice note with its duration."""
        ...


def voice_note(pcm: np.ndarray, rate: int) -> AudioPart:
    """Encode mono float32 samples as a voice note part (CPU-bound: call it from a worker thread)."""
    from ...audio.codec import encode_ogg_opus

    if pcm.size == 0:
        raise SynthesisError("the synthesizer produced no audio")
    return AudioPart(
        data=encode_ogg_opus(pcm, rate), mime="audio/ogg", duration_s=round(pcm.size / rate, 3), voice_note=True
    )


def voice_note_from_file(data: bytes) -> AudioPart:
    """Any audio file (WAV from espeak-ng, Opus/MP3 from an API) re-encoded as a voice note."""
    from ...audio.codec import OPUS_RATE, AudioDecodeError, decode_pcm

    try:
        pcm = decode_pcm(data, rate=OPUS_RATE)
    except AudioDecodeError as exc:
        raise SynthesisError(f"the synthesizer's audio cannot be decoded: {exc}") from exc
    return voice_note(pcm, OPUS_RATE)
