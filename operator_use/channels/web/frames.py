"""Reading the frames the page sends over the websocket: a pure function, no socket involved.

Two frames exist: {"type": "message", "text": "..."} and a voice note {"type": "audio", "mime": "audio/...",
"data": "<base64>"}. Anything else raises `BadFrame`, whose reason goes back to the page as an error event.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any


class BadFrame(Exception):
    """A frame we cannot take; the reason is shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TextFrame:
    text: str


@dataclass(frozen=True)
class AudioFrame:
    data: bytes
    mime: str  # the container, parameters dropped: "audio/webm;codecs=opus" -> "audio/webm"


def audio_frame_limit(max_audio_bytes: int) -> int:
    """Largest audio frame in bytes: the note's base64 (4/3 of it) plus room for the JSON around it."""
    return (max_audio_bytes + 2) // 3 * 4 + 1024


def frame_size(data: str) -> int:
    # surrogatepass: the size of any str, even one no UTF-8 encoder takes (the parser refuses those).
    return len(data.encode("utf-8", "surrogatepass"))


def parse_frame(data: str, *, max_message_bytes: int, max_audio_bytes: int) -> TextFrame | AudioFrame:
    """The frame's message or voice note, or `BadFrame` saying what is wrong with it. A voice note's frame is
    megabytes of base64: callers run this in a thread when the frame is larger than a text message."""
    size = frame_size(data)
    if size > max(max_message_bytes, audio_frame_limit(max_audio_bytes)):
        raise BadFrame(
            f"message too long ({size} bytes; the limit is {max_message_bytes}, {max_audio_bytes} for a voice note)"
        )
    try:
        event = json.loads(data)
    except RecursionError:
        raise BadFrame("malformed frame: JSON nested too deeply") from None
    except ValueError as exc:  # not JSON, or an integer longer than Python converts (4300 digits)
        raise BadFrame(
            "malformed frame: not JSON"
            if isinstance(exc, json.JSONDecodeError)
            else f"malformed frame: {str(exc).split(';')[0]}"
        ) from None
    if isinstance(event, dict) and event.get("type") == "audio":
        return _audio(event, max_audio_bytes)
    if size > max_message_bytes:
        raise BadFrame(f"message too long ({size} bytes; the limit is {max_message_bytes})")
    if not isinstance(event, dict) or event.get("type") != "message" or not isinstance(event.get("text"), str):
        raise BadFrame('malformed frame: expected {"type": "message", "text": "..."}')
    text = _unicode(event["text"], "message")
    if not text.strip():
        raise BadFrame("empty message")
    return TextFrame(text)


def _audio(event: dict[str, Any], max_audio_bytes: int) -> AudioFrame:
    mime, encoded = event.get("mime"), event.get("data")
    if not isinstance(mime, str) or not mime.startswith("audio/") or not isinstance(encoded, str):
        raise BadFrame('malformed frame: expected {"type": "audio", "mime": "audio/...", "data": "<base64>"}')
    _unicode(mime, "voice note type")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadFrame("malformed voice note: its data is not valid base64") from None
    if not audio:
        raise BadFrame("empty voice note")
    if len(audio) > max_audio_bytes:
        raise BadFrame(f"voice note too big ({len(audio)} bytes; the limit is {max_audio_bytes})")
    # The decoder reads the container, not the label.
    return AudioFrame(audio, mime.split(";")[0].strip().lower())


def _unicode(text: str, what: str) -> str:
    # A "\ud800" escape decodes to a lone surrogate: text that fails later in the history, the log or the
    # model's request, so it is refused here.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadFrame(f"malformed {what}: not valid Unicode (a lone surrogate at character {exc.start})") from None
    return text
