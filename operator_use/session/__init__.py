"""Per-conversation history: JSONL store and context-budget truncation."""

from .store import Session, SessionInfo, SessionStore
from .truncate import estimate_tokens, fit_to_budget

__all__ = ["Session", "SessionInfo", "SessionStore", "estimate_tokens", "fit_to_budget"]
