"""Message buses: the Bus protocol and its in-process implementation."""

from .base import Bus, OutboundItem
from .memory import MemoryBus

__all__ = ["Bus", "MemoryBus", "OutboundItem"]
