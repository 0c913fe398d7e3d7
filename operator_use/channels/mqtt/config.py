"""Settings of the MQTT channel (no aiomqtt import here: the config module loads without the extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from ..base import ChannelConfig


class MQTTConfig(ChannelConfig):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # TLS is on when `tls` is true or any of the files is given.
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Skips the broker's hostname check (self-signed test brokers only).
    tls_insecure: bool = False
    protocol: Literal["5", "3.1.1"] = "5"
    # Stable across restarts so the broker keeps our session (subscription and queued requests).
    # None: "operator-use-<agent>". Two agents sharing one id would keep disconnecting each other.
    client_id: str | None = None
    topic_prefix: str = "operator"
    agent: str = "agent"
    qos: Literal[0, 1, 2] = 1
    # "events": start/delta/end/done as the reply streams; "final": one `done` event per reply.
    stream: Literal["events", "final"] = "events"
    max_payload_bytes: int = Field(1_048_576, ge=64)
    keepalive: int = Field(30, ge=5)
    # Seconds to wait for the broker's answer to a connect, subscribe or QoS 1/2 publish.
    timeout: float = Field(10.0, gt=0)
    # Seconds the broker keeps our session (and queues requests) while the agent is away (MQTT v5).
    session_expiry: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    reconnect_min: float = Field(0.5, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    # Outgoing events kept while the broker is unreachable; beyond it, streamed edits wait (RetryAfter).
    max_pending: int = Field(1000, ge=10)
    edit_interval: float | None = 0.2
    # MQTT topic filters a request's reply_to (or v5 response topic) must match, `{client}` standing for
    # the sender's own level. They never open the agent's own topics (only the sender's out/ is allowed
    # there) nor another agent's under the same prefix. "#": anywhere else; []: only the sender's out/.
    reply_topics: list[str] = Field(default_factory=lambda: ["#"])

    @field_validator("reply_topics")
    @classmethod
    def _reply_filters(cls, value: list[str]) -> list[str]:
        for pattern in value:
            problem = _filter_problem(pattern)
            if problem:
                raise ValueError(f"reply topic filter {pattern!r} {problem}")
        return value

    @field_validator("topic_prefix", "agent")
    @classmethod
    def _topic_level(cls, value: str, info: ValidationInfo) -> str:
        if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must be a non-empty topic without wildcards (+, #) or leading/trailing '/'")
        if info.field_name == "agent" and "/" in value:
            raise ValueError("must be a single topic level (no '/')")
        return value

    @property
    def identifier(self) -> str:
        return self.client_id or f"operator-use-{self.agent}"

    @property
    def base_topic(self) -> str:
        return f"{self.topic_prefix}/{self.agent}"

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))


def _filter_problem(pattern: str) -> str | None:
    """Why `pattern` is not a reply topic filter, or None."""
    if not pattern or "\0" in pattern:
        return "must be a non-empty topic filter"
    if pattern.startswith("$"):
        return "cannot start with '$' (replies never go to $-topics)"
    levels = pattern.split("/")
    if any("#" in level for level in levels[:-1]) or ("#" in levels[-1] and levels[-1] != "#"):
        return "may hold '#' only as its whole last level"
    if any("+" in level and level != "+" for level in levels):
        return "may hold '+' only as a whole level"
    if any("{client}" in level and level != "{client}" for level in levels):
        return "may hold '{client}' only as a whole level"
    return None
