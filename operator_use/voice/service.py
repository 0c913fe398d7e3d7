"""Voice notes in and out, plugged into the orchestrator's hooks.

- `transcribe` (the orchestrator's hook for audio parts): size and length limits, then the configured
  speech-to-text provider;
- `speak` (called after a turn with the reply text): decides from the chat's mode and whether the user
  spoke, shapes the text for speech and synthesizes a voice note;
- `/voice off|auto|always`: the chat's mode, stored durably.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..agent.turn import TurnContext
from ..messages import AudioPart, IncomingMessage
from ..orchestrator.commands import Command
from ..providers.stt.base import Transcriber, TranscriptionError, too_long
from ..providers.tts.base import Synthesizer
from .config import VoiceConfig, VoiceMode
from .modes import VoiceModes
from .speech_text import for_speech

log = logging.getLogger(__name__)

MODES_FILE = "voice_modes.json"

_ALIASES: dict[str, VoiceMode] = {
    "off": "off",
    "no": "off",
    "none": "off",
    "false": "off",
    "text": "off",
    "auto": "when_spoken",
    "on": "when_spoken",
    "when_spoken": "when_spoken",
    "spoken": "when_spoken",
    "always": "always",
    "all": "always",
}
_DESCRIBE: dict[str, str] = {
    "off": "off (text only)",
    "when_spoken": "auto (a voice note is answered with one)",
    "always": "always (every reply is also spoken)",
}
USAGE = "Use /voice off, /voice auto (answer voice notes with voice) or /voice always."


class VoiceService:
    def __init__(
        self,
        config: VoiceConfig,
        home: Path,
        *,
        transcriber: Transcriber | None,
        synthesizer: Synthesizer | None,
        can_speak: Callable[[str], bool] = lambda channel: True,
    ) -> None:
        self.config = config
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.can_speak = can_speak
        self.modes = VoiceModes(home / MODES_FILE, config.mode)

    def install(self, orchestrator: Any) -> None:
        if self.transcriber is not None:
            orchestrator.transcribe = self.transcribe
        orchestrator.speak = self.speak
        orchestrator.commands.register("voice", "voice replies: off, auto (when you speak) or always", self._cmd_voice)

    async def aclose(self) -> None:
        for provider in (self.transcriber, self.synthesizer):
            close = getattr(provider, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing %s failed", type(provider).__name__)

    # --- in ---

    async def transcribe(self, audio: AudioPart) -> str:
        if self.transcriber is None:
            raise TranscriptionError("I can't listen to voice notes: speech-to-text is off.")
        if len(audio.data) > self.config.max_audio_bytes:
            raise TranscriptionError(
                f"That voice note is too big ({len(audio.data) / 1e6:.1f} MB; the limit is "
                f"{self.config.max_audio_bytes / 1e6:.0f} MB). Please send a shorter one."
            )
        # The platform's own duration, when it gives one, spares decoding a note we would refuse anyway.
        if audio.duration_s is not None and audio.duration_s > self.config.max_audio_seconds:
            raise too_long(self.config.max_audio_seconds)
        return await self.transcriber.transcribe(audio)

    # --- out ---

    async def wants_voice(self, ctx: TurnContext) -> bool:
        if self.synthesizer is None or not self.can_speak(ctx.channel):
            return False
        mode = await self.modes.get(ctx.address.key)
        return mode == "always" or (mode == "when_spoken" and ctx.spoken)

    async def speak(self, ctx: TurnContext, text: str) -> AudioPart | None:
        """The reply as a voice note, or None when this chat should not hear it."""
        if not await self.wants_voice(ctx):
            return None
        speech = for_speech(text, self.config.max_spoken_chars, self.config.long_reply)
        if not speech or self.synthesizer is None:
            return None
        return await self.synthesizer.synthesize(speech)

    # --- /voice ---

    async def _cmd_voice(self, message: IncomingMessage, command: Command) -> str:
        arg = command.args.strip().strip(".!?").strip().lower()
        if not arg:
            mode = await self.modes.get(message.key)
            return f"Voice replies here: {_DESCRIBE[mode]}. {USAGE}{self._caveat(message, mode)}"
        wanted = _ALIASES.get(arg)
        if wanted is None:
            return f"Unknown voice mode {arg!r}. {USAGE}"
        await self.modes.set(message.key, wanted)
        return f"Voice replies: {_DESCRIBE[wanted]}.{self._caveat(message, wanted)}"

    def _caveat(self, message: IncomingMessage, mode: str) -> str:
        if mode == "off":
            return ""
        if self.synthesizer is None:
            return (
                " Note: no text-to-speech is set up, so replies stay text (install operator-use[piper] "
                "or espeak-ng, or configure voice.tts)."
            )
        if not self.can_speak(message.channel):
            return " Note: this channel cannot send voice notes, so replies stay text."
        return ""
