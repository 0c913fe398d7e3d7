"""What a running agent reports about itself: the JSON document the control socket serves."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, Field


def package_version() -> str:
    """The installed distribution's version (what `pip show operator-use` says)."""
    try:
        return version("operator-use")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


class ConversationLane(BaseModel):
    key: str  # channel:chat[:thread]
    running: bool  # a turn is in flight
    queued: int  # messages waiting behind it


class OutgoingLane(BaseModel):
    key: str
    queued: int  # replies waiting to be delivered to that chat


class Status(BaseModel):
    version: str
    pid: int
    home: str
    started_at: float  # Unix time
    uptime: float  # seconds
    model: str
    channels: dict[str, str]  # name -> "up", "starting", "down", "failed", "reconnecting"...
    turns_running: int
    turns_done: int
    conversations: list[ConversationLane] = Field(default_factory=list)
    outgoing: list[OutgoingLane] = Field(default_factory=list)
    bus_incoming: int | None = None  # messages waiting on the bus for the orchestrator
    bus_outgoing: int | None = None  # items waiting on the bus for the gateway
