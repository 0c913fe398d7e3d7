"""Audio in and out with PyAV (FFmpeg's libraries, bundled in the wheel: no ffmpeg binary at run time).

In: whatever platforms send (OGG/Opus voice notes, MP3, M4A/AAC, WAV...) decoded to mono float32 PCM at
the rate speech recognizers want (16 kHz). Out: PCM encoded as OGG/Opus, mono, 48 kHz, which is what
Telegram and WhatsApp show as a voice note.

Everything here is synchronous and CPU-bound: callers run it in a worker thread (asyncio.to_thread).
`av` and `numpy` are imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

WHISPER_RATE = 16_000
OPUS_RATE = 48_000
OPUS_BITRATE = 32_000
# libopus takes 20 ms frames at 48 kHz.
_OPUS_FRAME = 960


class AudioDecodeError(Exception):
    """The bytes are not audio we can decode (corrupt, truncated, or not audio at all)."""


class AudioTooLong(Exception):
    """Decoding stopped because the audio is longer than the allowed limit."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"audio longer than {limit_s:g} s")
        self.limit_s = limit_s


def decode_pcm(data: bytes, *, rate: int = WHISPER_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode any container/codec FFmpeg knows into mono float32 samples in [-1, 1] at `rate`.

    Raises AudioDecodeError for undecodable input and AudioTooLong as soon as more than `max_seconds`
    have been decoded (so an over-long note costs a fraction of its full decode).
    """
    import av
    import numpy as np

    if not data:
        return np.zeros(0, dtype=np.float32)
    limit = None if max_seconds is None else int(max_seconds * rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples: some muxers send broken timestamps
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
                if limit is not None and total > limit:
                    raise AudioTooLong(max_seconds or 0.0)
            for out in resampler.resample(None):
                total += _append(chunks, out)
    except (AudioDecodeError, AudioTooLong):
        raise
    except (av.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise AudioDecodeError(f"cannot decode audio: {exc}") from exc
    if limit is not None and total > limit:
        raise AudioTooLong(max_seconds or 0.0)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _append(chunks: list[np.ndarray], frame: object) -> int:
    samples = frame.to_ndarray().reshape(-1)  # type: ignore[attr-defined]
    chunks.append(samples)
    return int(samples.shape[0])


def encode_ogg_opus(pcm: np.ndarray, rate: int, *, bitrate: int = OPUS_BITRATE) -> bytes:
    """Encode mono float32 samples (any rate) as an OGG/Opus voice note, mono 48 kHz."""
    import av
    import numpy as np

    samples = np.ascontiguousarray(np.clip(pcm, -1.0, 1.0), dtype=np.float32).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = bitrate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=OPUS_RATE, frame_size=_OPUS_FRAME)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        frames = list(resampler.resample(frame)) if samples.shape[1] else []
        frames += resampler.resample(None)
        for chunk in frames:
            chunk.pts = None
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def duration_s(data: bytes) -> float:
    """The exact length of an audio file in seconds, by decoding it (container headers can lie)."""
    return float(decode_pcm(data, rate=WHISPER_RATE).shape[0]) / WHISPER_RATE
