"""Every message that crosses the pipeline, as JSON-serializable pydantic models.

Three families live here:
- what channels put on the bus (`IncomingMessage`) and what the gateway delivers (`OutgoingMessage`
  and the `Stream*` events of a reply that is streamed into one edited message);
- the parts a message is made of (text, audio, image, file);
- the LLM history (`SystemMessage`, `HumanMessage`, `AIMessage`, `ToolMessage`).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


def new_id() -> str:
    return uuid.uuid4().hex[:16]


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub_surrogates(text: str) -> str:
    """`text` with every lone UTF-16 surrogate (which has no UTF-8 form, so could be neither saved nor sent)
    replaced by U+FFFD; a pair of them becomes the character it encodes."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def scrub_deep(value: Any) -> Any:
    """`scrub_surrogates` on every string in `value`, keys of nested dicts and items of lists included."""
    if isinstance(value, str):
        return scrub_surrogates(value)
    if isinstance(value, dict):
        return {scrub_deep(k): scrub_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_deep(v) for v in value]
    return value


class _Model(BaseModel):
    # Binary payloads (audio, images) travel as base64 in JSON so every message survives a broker.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", frozen=False)


# --- parts -----------------------------------------------------------------------------------


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str

    # Platforms can hand over broken UTF-16 (a JSON "\ud800" escape): cleaned where text enters, so the
    # model, the reply and the saved history all see the same text.
    @field_validator("text")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


class AudioPart(_Model):
    type: Literal["audio"] = "audio"
    data: bytes = b""
    mime: str = "audio/ogg"
    duration_s: float | None = None
    # A voice note recorded as such (Telegram voice, Discord voice message), not an audio file.
    voice_note: bool = True


class ImagePart(_Model):
    type: Literal["image"] = "image"
    data: bytes = b""
    mime: str = "image/png"
    url: str | None = None


class FilePart(_Model):
    type: Literal["file"] = "file"
    name: str
    mime: str = "application/octet-stream"
    data: bytes = b""
    # Where the channel saved it in the workspace, when it did.
    path: str | None = None


Part = Annotated[TextPart | AudioPart | ImagePart | FilePart, Field(discriminator="type")]


# --- addressing -------------------------------------------------------------------------------


class Address(_Model):
    """Where a conversation lives: one channel, one chat, optionally one thread/topic within it."""

    channel: str
    chat_id: str
    thread_id: str | None = None

    @property
    def key(self) -> str:
        return conversation_key(self.channel, self.chat_id, self.thread_id)


def conversation_key(channel: str, chat_id: str, thread_id: str | None = None) -> str:
    return f"{channel}:{chat_id}:{thread_id}" if thread_id else f"{channel}:{chat_id}"


# --- bus messages ----------------------------------------------------------------------------


class IncomingMessage(_Model):
    id: str = Field(default_factory=new_id)
    channel: str
    chat_id: str
    thread_id: str | None = None
    user_id: str
    user_name: str | None = None
    parts: list[Part] = Field(default_factory=list)
    # Platform message id, so replies can quote it.
    message_id: str | None = None
    is_direct: bool = True
    mentioned: bool = False
    # Platform groups the sender belongs to here ("role:<id>", "guild:<id>"): allowlists may name them.
    groups: list[str] = Field(default_factory=list)
    received_at: float = Field(default_factory=time.time)

    @property
    def address(self) -> Address:
        return Address(channel=self.channel, chat_id=self.chat_id, thread_id=self.thread_id)

    @property
    def key(self) -> str:
        return conversation_key(self.channel, self.chat_id, self.thread_id)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @classmethod
    def of_text(cls, channel: str, chat_id: str, user_id: str, text: str, **kw: Any) -> IncomingMessage:
        return cls(channel=channel, chat_id=chat_id, user_id=user_id, parts=[TextPart(text=text)], **kw)


class Button(_Model):
    """A button under a message. Pressing it sends `command` (such as "/approve ab12") to the orchestrator as
    the presser's own message, so it is authorized exactly like the same command typed by that person."""

    label: str
    command: str
    style: Literal["primary", "danger", "secondary"] = "secondary"


class OutgoingMessage(_Model):
    """A whole message: command replies, errors, files, voice notes."""

    kind: Literal["message"] = "message"
    address: Address
    parts: list[Part] = Field(default_factory=list)
    reply_to: str | None = None
    # Shown under the message's last chunk on channels whose `Capabilities.buttons` is true; elsewhere the
    # text alone must say what to type (an approval request names /approve and /deny).
    buttons: list[Button] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @classmethod
    def of_text(cls, address: Address, text: str, reply_to: str | None = None) -> OutgoingMessage:
        return cls(address=address, parts=[TextPart(text=text)], reply_to=reply_to)


class StreamStart(_Model):
    kind: Literal["stream_start"] = "stream_start"
    address: Address
    stream_id: str
    reply_to: str | None = None


class StreamDelta(_Model):
    """New text of a streamed reply: only what is new, never the accumulated text."""

    kind: Literal["stream_delta"] = "stream_delta"
    address: Address
    stream_id: str
    delta: str

    # A model can stream broken UTF-16 too: the chat shows what the history keeps (session/store.py).
    @field_validator("delta")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


class StreamBlockEnd(_Model):
    """The model stopped writing to call tools: the text so far stays as it is."""

    kind: Literal["stream_block_end"] = "stream_block_end"
    address: Address
    stream_id: str


class StreamDone(_Model):
    kind: Literal["stream_done"] = "stream_done"
    address: Address
    stream_id: str
    # True when the turn was cancelled or failed: the editor flushes what it has and marks nothing.
    interrupted: bool = False


class Typing(_Model):
    kind: Literal["typing"] = "typing"
    address: Address
    active: bool = True


class CloseButtons(_Model):
    """The buttons a message was sent with stop being pressable: the message that carries a button with one of
    `commands` (sent earlier in this chat) loses them and shows `note` under its text, where the channel can
    edit it (`Channel.close_buttons`). Elsewhere a late press simply gets the command's normal answer."""

    kind: Literal["close_buttons"] = "close_buttons"
    address: Address
    commands: list[str]
    note: str = ""


Outbound = Annotated[
    OutgoingMessage | StreamStart | StreamDelta | StreamBlockEnd | StreamDone | Typing | CloseButtons,
    Field(discriminator="kind"),
]
OutboundAdapter: TypeAdapter[Any] = TypeAdapter(Outbound)
StreamEvent = StreamStart | StreamDelta | StreamBlockEnd | StreamDone


# --- LLM history -----------------------------------------------------------------------------

# Each text of the history goes back to the model as UTF-8 on the next call, where a lone surrogate (a tool
# result listing a file whose name is not UTF-8, a model's "\ud800" escape) would fail the whole request: every
# message cleans its text as it is built, as `TextPart` does where text enters.


class ToolCall(_Model):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    # A model's JSON can spell a lone surrogate ("\udc80"): cleaned so the call can be sent back and saved.
    @field_validator("id", "name", "arguments")
    @classmethod
    def scrub(cls, value: Any) -> Any:
        return scrub_deep(value)


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
        )


class SystemMessage(_Model):
    role: Literal["system"] = "system"
    content: str

    @field_validator("content")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


class HumanMessage(_Model):
    role: Literal["human"] = "human"
    content: str
    images: list[ImagePart] = Field(default_factory=list)
    user_id: str | None = None
    at: float = Field(default_factory=time.time)

    @field_validator("content")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


class AIMessage(_Model):
    role: Literal["ai"] = "ai"
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str | None = None
    usage: Usage | None = None
    at: float = Field(default_factory=time.time)

    @field_validator("content")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


class ToolMessage(_Model):
    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    at: float = Field(default_factory=time.time)

    @field_validator("content", "name", "tool_call_id")
    @classmethod
    def scrub(cls, value: str) -> str:
        return scrub_surrogates(value)


HistoryMessage = Annotated[SystemMessage | HumanMessage | AIMessage | ToolMessage, Field(discriminator="role")]
HistoryAdapter: TypeAdapter[Any] = TypeAdapter(HistoryMessage)
