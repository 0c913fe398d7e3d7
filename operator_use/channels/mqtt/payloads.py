"""Reading MQTT requests and writing reply events: pure functions, no broker involved."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from ...messages import AudioPart

MAX_ID_LENGTH = 128


class BadRequest(Exception):
    """A payload we cannot read; the reason goes back to the client on the error topic."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


@dataclass
class Request:
    text: str = ""
    audio: AudioPart | None = None
    # Where the client wants the reply (JSON `reply_to`), checked by `check_reply_topic`.
    reply_to: str | None = None
    id: str | None = None


def parse_request(payload: bytes, *, max_bytes: int) -> Request:
    """Plain UTF-8 text, or (when it starts with "{") a JSON object {text, audio, reply_to, id}."""
    if len(payload) > max_bytes:
        raise BadRequest(f"payload too large: {len(payload)} bytes, the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("empty request")
    if not text.lstrip().startswith("{"):
        return Request(text=text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"payload starts with '{{' but is not valid JSON: {exc.msg} "
                         f"(line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise BadRequest("a JSON request must be an object")
    return _from_json(data)


def _from_json(data: dict[str, Any]) -> Request:
    raw_id = data.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))
                               or len(str(raw_id)) > MAX_ID_LENGTH):
        raise BadRequest(f"id must be a string or a number of at most {MAX_ID_LENGTH} characters")
    request = Request(id=None if raw_id is None else str(raw_id))

    def bad(reason: str) -> BadRequest:
        return BadRequest(reason, request.id)

    text = data.get("text", "")
    if not isinstance(text, str):
        raise bad("text must be a string")
    request.text = text
    reply_to = data.get("reply_to")
    if reply_to is not None and not isinstance(reply_to, str):
        raise bad("reply_to must be a topic name (a string)")
    request.reply_to = reply_to
    audio = data.get("audio")
    if audio is not None:
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise bad('audio must be an object {"data": base64, "mime": "audio/..."}')
        mime = audio.get("mime", "audio/ogg")
        if not isinstance(mime, str) or not mime.startswith("audio/"):
            raise bad("audio.mime must be an audio/* type")
        try:
            raw = base64.b64decode(audio["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"audio.data is not valid base64 ({exc})") from None
        if not raw:
            raise bad("audio.data is empty")
        request.audio = AudioPart(data=raw, mime=mime)
    if not request.text.strip() and request.audio is None:
        raise bad("the request has neither text nor audio")
    return request


def check_reply_topic(topic: str, own_base: str) -> str | None:
    """Why `topic` cannot take replies, or None when it can."""
    if not topic or len(topic.encode("utf-8")) > 65535:
        return "reply_to must be a non-empty topic"
    if any(c in topic for c in "+#\0"):
        return "reply_to cannot contain wildcards (+, #)"
    if topic.startswith("$"):
        return "reply_to cannot be a $-topic"
    if topic.startswith(f"{own_base}/in/"):
        # Replies published into our own request topics would be read back as requests: a loop.
        return "reply_to cannot be one of the agent's request topics"
    return None


def event(kind: str, request_id: str | None, **fields: Any) -> bytes:
    return json.dumps({"type": kind, "id": request_id, **fields}, ensure_ascii=False).encode("utf-8")
