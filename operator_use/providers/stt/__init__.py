"""Speech-to-text providers: `local` (faster-whisper) and `openai_api` (any /v1/audio/transcriptions).

Only the contract is imported here; each provider imports its SDK when it is built or first used.
"""

from .base import UNCLEAR, Transcriber, TranscriptionError

__all__ = ["UNCLEAR", "Transcriber", "TranscriptionError"]
