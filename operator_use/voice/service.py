"""Voice notes in and out, plugged into the orchestrator's hooks.

- `transcribe` (the orchestrator's hook for audio parts): size and length limits, then the configured
  speech-to-text provider;
- `speak` (called after a turn with the reply text): decides from the chat's mode and whether the user
  spoke, shapes the text for speech and synthesizes a voice note;
- `/voice off|auto|always`: the chat's mode, stored durably.

A spoken reply that fails (synthesis, or the gateway giving up on sending the voice note) is logged with
its detail, and the chat is told a fixed category of failure (never the error's text: an API's error body
may quote a key or a request id) in one short text message, once until a voice note gets through again or
the category changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..agent.turn import TurnContext
from ..messages import Address, AudioPart, IncomingMessage, OutgoingMessage, TextPart
from ..orchestrator.commands import Command
from ..providers.stt.base import Transcriber, TranscriptionError, too_long
from ..providers.tts.base import SynthesisError, SynthesisFailure, Synthesizer
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
CANNOT_SPEAK = "I could not speak this reply ({reason}); the text above is the answer."
# What the chat is told about a failure: fixed words, the detail is in the (redacted) log.
FAILURE_CATEGORIES: dict[SynthesisFailure, str] = {
    "engine": "the speech engine failed",
    "not_set_up": "the speech engine is not set up",
    "service_refused": "the speech service refused the request",
    "service_unreachable": "the speech service could not be reached",
}
PLATFORM_REFUSED = "the platform refused the voice note"
_MAX_TOLD_CHATS = 10_000


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
        # chat key -> the category of failure the chat was last told (cleared when a voice note gets through)
        self._told: dict[str, str] = {}
        self._bus: Any = None
        self._delivery_reported = False

    def install(self, orchestrator: Any, gateway: Any = None) -> None:
        """Hooks into the orchestrator; with the `gateway`, also hears whether voice notes were delivered."""
        if self.transcriber is not None:
            orchestrator.transcribe = self.transcribe
        orchestrator.speak = self.speak
        self._bus = orchestrator.bus
        if gateway is not None:
            gateway.on_parts_sent.append(self.parts_sent)
            self._delivery_reported = True
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
        try:
            audio = await self.synthesizer.synthesize(speech)
        except Exception as exc:
            # The text reply is already out: a voice failure costs only the voice note.
            log.warning(
                "could not speak the reply in %s: %s",
                ctx.address.key,
                _reason(exc),
                exc_info=not isinstance(exc, SynthesisError),  # a trace only for the unexpected
            )
            kind = exc.kind if isinstance(exc, SynthesisError) else "engine"
            await self._tell(ctx.address, FAILURE_CATEGORIES[kind])
            return None
        if not self._delivery_reported:  # nobody reports the sending: a voice note made is the success
            self._told.pop(ctx.address.key, None)
        return audio

    async def parts_sent(self, message: OutgoingMessage, problem: str | None) -> None:
        """The gateway's report on a message's attachments: a voice note delivered, or why not (the
        gateway logged it)."""
        if not any(isinstance(p, AudioPart) and p.voice_note for p in message.parts):
            return
        if problem is None:
            self._told.pop(message.address.key, None)
        else:  # the gateway logged `problem`: the platform's words, which the chat is not shown
            await self._tell(message.address, PLATFORM_REFUSED)

    async def _tell(self, address: Address, category: str) -> None:
        if self._told.get(address.key) == category or self._bus is None:
            return
        self._told.pop(address.key, None)
        self._told[address.key] = category  # the most recent last: the oldest chat is the first to forget
        if len(self._told) > _MAX_TOLD_CHATS:  # at worst it is told again
            self._told.pop(next(iter(self._told)))
        await self._bus.publish_outgoing(
            OutgoingMessage(address=address, parts=[TextPart(text=CANNOT_SPEAK.format(reason=category))])
        )

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


def _reason(exc: Exception) -> str:
    return _short(str(exc)) or type(exc).__name__


def _short(text: str) -> str:
    first = text.strip().split("\n", 1)[0].strip()
    return first if len(first) <= 160 else first[:159] + "…"
