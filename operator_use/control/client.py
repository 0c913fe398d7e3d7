"""Asking a running agent over its control socket (the CLI's side; sync: a short blocking exchange)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .paths import socket_path, via_short_path


class NotRunning(Exception):
    """No agent answers on this data home's control socket."""


def ask(home: Path, request: str = "status", timeout: float = 10.0) -> dict[str, Any]:
    """Send one request, return the decoded JSON answer. NotRunning when nothing listens."""
    path = socket_path(home)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            via_short_path(path, sock.connect)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise NotRunning(str(exc)) from None
        sock.sendall(request.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = json.loads(b"".join(chunks).decode("utf-8"))
    if not isinstance(answer, dict):
        raise ValueError("the control socket answered something that is not a JSON object")
    return answer
