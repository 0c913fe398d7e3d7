"""Text-to-speech providers: `piper` (local, GPL: the optional `piper` extra), `espeak` (the espeak-ng
program) and `openai_api` (any /v1/audio/speech). Only the contract is imported here."""

from .base import SynthesisError, Synthesizer

__all__ = ["SynthesisError", "Synthesizer"]
