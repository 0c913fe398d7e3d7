"""The embedded bus: two bounded asyncio queues in one process."""

from __future__ import annotations

import asyncio

from ..messages import IncomingMessage
from .base import OutboundItem


class MemoryBus:
    def __init__(self, maxsize: int = 1000) -> None:
        self.incoming: asyncio.Queue[IncomingMessage] = asyncio.Queue(maxsize)
        self.outgoing: asyncio.Queue[OutboundItem] = asyncio.Queue(maxsize)

    async def publish_incoming(self, message: IncomingMessage) -> None:
        await self.incoming.put(message)

    async def next_incoming(self) -> IncomingMessage:
        return await self.incoming.get()

    async def publish_outgoing(self, item: OutboundItem) -> None:
        await self.outgoing.put(item)

    async def next_outgoing(self) -> OutboundItem:
        return await self.outgoing.get()

    async def close(self) -> None:
        return None
