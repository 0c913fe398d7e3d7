"""Reading MQTT requests and writing reply events: pure functions, no broker involved."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
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
        raise BadRequest(
            f"payload starts with '{{' but is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise BadRequest("payload is JSON nested too deeply") from None
    except ValueError as exc:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise BadRequest(f"payload is JSON that cannot be read: {str(exc).split(';')[0]}") from None
    if not isinstance(data, dict):
        raise BadRequest("a JSON request must be an object")
    return _from_json(data)


def _from_json(data: dict[str, Any]) -> Request:
    raw_id = data.get("id")
    if raw_id is not None and (
        isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or len(str(raw_id)) > MAX_ID_LENGTH
    ):
        raise BadRequest(f"id must be a string or a number of at most {MAX_ID_LENGTH} characters")
    request = Request(id=None if raw_id is None else _unicode(str(raw_id), "id", None))

    def bad(reason: str) -> BadRequest:
        return BadRequest(reason, request.id)

    text = data.get("text", "")
    if not isinstance(text, str):
        raise bad("text must be a string")
    request.text = _unicode(text, "text", request.id)
    reply_to = data.get("reply_to")
    if reply_to is not None and not isinstance(reply_to, str):
        raise bad("reply_to must be a topic name (a string)")
    request.reply_to = None if reply_to is None else _unicode(reply_to, "reply_to", request.id)
    audio = data.get("audio")
    if audio is not None:
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise bad('audio must be an object {"data": base64, "mime": "audio/..."}')
        mime = audio.get("mime", "audio/ogg")
        if not isinstance(mime, str) or not mime.startswith("audio/"):
            raise bad("audio.mime must be an audio/* type")
        _unicode(mime, "audio.mime", request.id)
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


def _unicode(value: str, what: str, request_id: str | None) -> str:
    """JSON escapes can spell lone surrogates ("\\ud800"): text that no UTF-8 encoder takes, so the
    reply, the log or the model's request would fail on it later; it is refused here with a reason."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(
            f"{what} is not valid Unicode (a lone surrogate at character {exc.start})", request_id
        ) from None
    return value


def check_reply_topic(
    topic: str, own_base: str, client: str | None = None, *, allowed: Sequence[str] = ("#",), what: str = "reply_to"
) -> str | None:
    """Why `topic` cannot take the replies to `client`'s request, or None when it can. `what` names where
    the topic came from (reply_to or the v5 response topic); `allowed` holds the configured filters."""
    if not topic or len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return f"{what} must be a non-empty topic"
    if any("\ud800" <= c <= "\udfff" for c in topic):
        return f"{what} is not valid Unicode"
    if any(c in topic for c in "+#\0"):
        return f"{what} cannot contain wildcards (+, #)"
    if topic.startswith("$"):
        return f"{what} cannot be a $-topic"
    if topic == own_base or topic.startswith(f"{own_base}/"):
        if topic.startswith(f"{own_base}/in/"):
            # Replies published into our own request topics would be read back as requests: a loop.
            return f"{what} cannot be one of the agent's request topics"
        # The agent may publish on every client's out/ and error/ topic, so the broker's ACL cannot stop
        # one client from having its replies written into another's: only the sender's own out/ is open.
        own_out = f"{own_base}/out/{client}"
        if client is not None and (topic == own_out or topic.startswith(f"{own_out}/")):
            return None
        return f"{what} cannot be another of the agent's topics: under {own_base}/ replies go only to " + (
            own_out if client is not None else "the sender's own out/ topic"
        )
    prefix = own_base.rpartition("/")[0]
    levels = topic[len(prefix) + 1 :].split("/") if topic.startswith(f"{prefix}/") else []
    if len(levels) >= 3 and levels[1] in ("in", "out", "error"):
        # Another agent's channel topics on the same broker: its requests (spoofing a sender) or replies.
        return f"{what} cannot be another agent's topic ({prefix}/<agent>/{levels[1]}/...)"
    if not allowed:
        return (
            f"{what} must be left out: custom reply topics are off (channels.mqtt.reply_topics), "
            f"replies go to {own_base}/out/{'<client>' if client is None else client}"
        )
    if not any(topic_matches(pattern, topic, client) for pattern in allowed):
        return f"{what} matches none of the allowed reply topics (channels.mqtt.reply_topics)"
    return None


def topic_matches(pattern: str, topic: str, client: str | None = None) -> bool:
    """MQTT filter matching ('+' one level, a last '#' any number of levels, none included), with a
    `{client}` level matching only the sender's own client level."""
    want, have = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have):
            return False
        if level == "{client}":
            if client is None or have[i] != client:
                return False
        elif level != "+" and level != have[i]:
            return False
    return len(want) == len(have)


def event(kind: str, request_id: str | None, **fields: Any) -> bytes:
    body = {"type": kind, "id": request_id, **fields}
    try:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the model's text: as a JSON escape it is still sent
        return json.dumps(body).encode("utf-8")
