"""A real Mosquitto broker for tests, and the real mosquitto_sub/mosquitto_pub clients to talk to it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deps import require_binary


def _version(protocol: str) -> str:
    return {"5": "mqttv5", "3.1.1": "mqttv311"}[protocol]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker on 127.0.0.1 with persistence in `workdir`, so it can be killed and restarted with its
    sessions and queued QoS 1 messages intact."""

    def __init__(self, workdir: Path, *, port: int | None = None, anonymous: bool = True, extra_conf: str = "") -> None:
        # Debian installs the broker in /usr/sbin, which a non-root PATH may lack.
        self.binary = (
            shutil.which("mosquitto")
            or shutil.which("mosquitto", path="/usr/sbin:/sbin")
            or require_binary("mosquitto")
        )
        self.workdir = workdir
        self.port = port or free_port()
        self.anonymous = anonymous
        self.extra_conf = extra_conf
        self.proc: asyncio.subprocess.Process | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log}",
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to "mosquitto", who cannot write workdir
        self.conf.write_text("\n".join(lines) + "\n" + self.extra_conf)

    async def start(self, timeout: float = 10.0) -> None:
        self._write_conf()
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", str(self.conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # until the port accepts connections (or the broker died, or the deadline passed)
            if self.proc.returncode is not None:
                err = (await self.proc.stderr.read()).decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages to disk, then exits."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Subscriber:
    """`mosquitto_sub -d` on one topic filter, collecting (topic, payload) lines as they arrive."""

    def __init__(
        self,
        port: int,
        topic: str | list[str],
        *,
        client_id: str | None = None,
        persistent: bool = False,
        protocol: str = "5",
        timeout: int = 90,
    ) -> None:
        # stdbuf: mosquitto_sub does not flush its "Subscribed" line when stdout is a pipe.
        self.args = [
            "stdbuf",
            "-oL",
            require_binary("mosquitto_sub"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "1",
            "-d",
            "-F",
            "MSG %t %p",
            "-W",
            str(timeout),
            "-V",
            _version(protocol),
        ]
        for t in [topic] if isinstance(topic, str) else topic:
            self.args += ["-t", t]
        if client_id:
            self.args += ["-i", client_id]
        if persistent:
            self.args += ["-c"] + (["-x", "3600"] if protocol == "5" else [])
        self.messages: list[tuple[str, str]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._changed = asyncio.Condition()

    async def start(self, timeout: float = 10.0) -> Subscriber:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._subscribed.wait(), timeout)
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("Subscribed (mid"):  # one SUBSCRIBE carries every topic
                self._subscribed.set()
            elif line.startswith("MSG "):
                topic, _, payload = line[4:].partition(" ")
                async with self._changed:
                    self.messages.append((topic, payload))
                    self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate() or self._reader is None or self._reader.done())
            if not predicate():
                raise AssertionError(f"mosquitto_sub ended before the condition held; got {self.messages}")

        await asyncio.wait_for(check(), timeout)

    def events(self, topic: str | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for t, payload in self.messages:
            if topic is not None and t != topic:
                continue
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if request_id is None or data.get("id") == request_id:
                out.append(data)
        return out

    def done(self, request_id: str, topic: str | None = None) -> dict[str, Any] | None:
        return next((e for e in self.events(topic, request_id) if e.get("type") == "done"), None)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Subscriber:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def publish(port: int, topic: str, payload: bytes | str, *, qos: int = 1, protocol: str = "5") -> None:
    """One message with the real mosquitto_pub (payload from stdin, so any bytes go through)."""
    data = payload.encode() if isinstance(payload, str) else payload
    proc = await asyncio.create_subprocess_exec(
        require_binary("mosquitto_pub"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        topic,
        "-q",
        str(qos),
        "-V",
        _version(protocol),
        "-s",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(data), 20)
    if proc.returncode != 0:
        raise RuntimeError(f"mosquitto_pub failed ({proc.returncode}): {out.decode(errors='replace')}")
