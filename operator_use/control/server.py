"""The control socket's server: one request line in ("status"), one JSON document out, connection closed.

Started by `App.start` after the home lock is held and removed by `App.stop`. Protected by the file's mode
(0600) and the data home's permissions: anyone who can connect is the agent's own user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from .paths import bind_private, socket_path

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 256


class ControlServer:
    def __init__(self, home: Path, status: Callable[[], BaseModel]) -> None:
        self.path = socket_path(home)
        self._status = status
        self._server: asyncio.Server | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        sock = await asyncio.to_thread(bind_private, self.path)
        self._inode = (await asyncio.to_thread(os.stat, self.path)).st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        log.info("control socket %s", self.path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.to_thread(self._remove)

    def _remove(self) -> None:
        # Only our own file: never one a later agent bound after a forced takeover.
        try:
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            except (TimeoutError, ValueError, ConnectionError):  # slow, oversized or gone: nothing to answer
                return
            request = line.decode("utf-8", "replace").strip()
            if request == "status":
                body = self._status().model_dump_json()
            else:
                body = json.dumps({"error": f"unknown request {request[:40]!r}; known: status"})
            writer.write(body.encode() + b"\n")
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except Exception:
            log.exception("control socket request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
