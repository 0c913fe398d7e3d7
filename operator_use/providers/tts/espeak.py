"""Text-to-speech with the espeak-ng program (robotic but tiny, and in every Linux distribution).

espeak-ng runs as an async subprocess writing WAV to its stdout; the text goes in on stdin so nothing in
it can be taken for a command-line option. It gets only the environment it reads, not the agent's (API
keys, tokens).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping

from ...messages import AudioPart
from ...tools.shell import scrubbed_env
from .base import SynthesisError, voice_note_from_file

BINARY = "espeak-ng"
# PATH to find it, the locale, and where its voice data may be: ESPEAK_DATA_PATH, else ~/espeak-ng-data,
# else the system's.
_KEEP = ("PATH", "HOME", "LANG", "LANGUAGE", "ESPEAK_DATA_PATH")


def espeak_env(environ: Mapping[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in environ.items() if k in _KEEP or k.startswith("LC_")}
    return scrubbed_env(kept)  # and even those, when one looks like a credential


def espeak_available() -> bool:
    return shutil.which(BINARY) is not None


class EspeakSynthesizer:
    def __init__(
        self, voice: str | None = None, *, speed: int = 165, timeout: float = 120.0, binary: str = BINARY
    ) -> None:
        self.voice = voice or "en-us"
        self.speed = speed
        self.timeout = timeout
        self.binary = binary

    async def synthesize(self, text: str) -> AudioPart:
        wav = await self.wav(text)
        return await asyncio.to_thread(voice_note_from_file, wav)

    async def wav(self, text: str) -> bytes:
        """The raw WAV espeak-ng writes (tests and benchmarks use it to make real speech)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                "--stdout",
                "--stdin",
                "-v",
                self.voice,
                "-s",
                str(self.speed),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=espeak_env(os.environ),
            )
        except FileNotFoundError as exc:
            raise SynthesisError(f"{self.binary} is not installed", kind="not_set_up") from exc
        try:
            wav, err = await asyncio.wait_for(proc.communicate(text.encode("utf-8")), self.timeout)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0 or not wav:
            raise SynthesisError(f"{self.binary} failed ({proc.returncode}): {err.decode(errors='replace')[:200]}")
        return wav
