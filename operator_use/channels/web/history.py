"""A conversation's history as the page shows it."""

from __future__ import annotations

from typing import Any

from ...messages import HistoryMessage


def history_items(messages: list[HistoryMessage], limit: int) -> list[dict[str, Any]]:
    """The user's messages and the agent's text, the last `limit` of them. Tool calls and their results
    were not part of the chat as the user saw it; the text the agent wrote around them was streamed into
    one message, so it is joined back into one here (as the stream editor joined it)."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "human" and m.content:
            items.append({"role": "user", "text": m.content})
        elif m.role == "ai" and m.content.strip():
            text = m.content.strip("\n")
            if items and items[-1]["role"] == "assistant":
                items[-1]["text"] += "\n\n" + text
            else:
                items.append({"role": "assistant", "text": text})
    return items[-limit:] if limit else []
