"""The bus between channels and agents: two streams of typed messages.

`incoming` carries `IncomingMessage`s from channels to the orchestrator; `outgoing` carries
`OutgoingMessage`s and stream events from the orchestrator to the gateway. Implementations are bounded:
a full bus makes publishers wait (back-pressure) instead of growing without limit.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..messages import (
    CloseButtons,
    IncomingMessage,
    OutgoingMessage,
    StreamBlockEnd,
    StreamDelta,
    StreamDone,
    StreamStart,
    Typing,
)

OutboundItem = OutgoingMessage | StreamStart | StreamDelta | StreamBlockEnd | StreamDone | Typing | CloseButtons


@runtime_checkable
class Bus(Protocol):
    async def publish_incoming(self, message: IncomingMessage) -> None: ...

    async def next_incoming(self) -> IncomingMessage: ...

    async def publish_outgoing(self, item: OutboundItem) -> None: ...

    async def next_outgoing(self) -> OutboundItem: ...

    async def close(self) -> None: ...
