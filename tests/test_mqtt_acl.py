"""The MQTT guide's Mosquitto ACL (docs/channels/mqtt.md), run in a real Mosquitto with the real channel as the
agent's broker user: a sender's identity is its topic level, and the ACL keeps each client on its own."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from operator_use.channels.mqtt.channel import MQTTChannel
from operator_use.channels.mqtt.config import MQTTConfig
from operator_use.messages import IncomingMessage
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer
from .support.deps import require_binary, require_module
from .support.mqtt import Mosquitto
from .support.pipeline import TappedBus, make_app, scripted_responder

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "channels" / "mqtt.md"
PASSWORDS = {"agent": "agent-pw", "alice": "alice-pw", "bob": "bob-pw"}


def readme_acl() -> str:
    """The ACL file exactly as the MQTT guide shows it."""
    blocks = re.findall(r"```conf\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    [acl] = [b for b in blocks if "pattern write operator/agent/in/%u" in b]
    return acl


class RecordingBus(TappedBus):
    """Also keeps every request the channel hands to the pipeline, in the order the broker delivered them."""

    def __init__(self) -> None:
        super().__init__()
        self.incoming_log: list[IncomingMessage] = []

    async def publish_incoming(self, message: IncomingMessage) -> None:
        self.incoming_log.append(message)
        await super().publish_incoming(message)


class Client:
    """A real aiomqtt client logged in as one broker user, keeping every message it may read."""

    def __init__(self, port: int, user: str) -> None:
        import aiomqtt

        self.client = aiomqtt.Client(
            "127.0.0.1",
            port,
            username=user,
            password=PASSWORDS[user],
            identifier=f"test-{user}",
            protocol=aiomqtt.ProtocolVersion.V5,
        )
        self.got: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Condition()

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                data = json.loads(payload)
            except ValueError:
                data = {"raw": payload.decode(errors="replace")}  # a request, readable only without the ACL
            async with self._changed:
                self.got.append((message.topic.value, data if isinstance(data, dict) else {"raw": data}))
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool]) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.got))

        await asyncio.wait_for(check(), 20)

    def done(self, topic: str) -> list[str]:
        return [e["text"] for t, e in self.got if t == topic and e.get("type") == "done"]


@asynccontextmanager
async def logged_in(port: int, user: str, *subscriptions: str) -> AsyncIterator[Client]:
    c = Client(port, user)
    async with c.client:
        for topic in subscriptions:
            await c.client.subscribe(topic, qos=1)
        reader = asyncio.create_task(c._read())
        try:
            yield c
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@pytest.fixture
async def locked_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    require_module("aiomqtt")
    passwd = require_binary("mosquitto_passwd")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    for i, (user, password) in enumerate(PASSWORDS.items()):
        await asyncio.to_thread(
            subprocess.run,
            [passwd, "-b", *(["-c"] if i == 0 else []), str(workdir / "passwd"), user, password],
            check=True,
        )
    (workdir / "acl").write_text(readme_acl())
    broker = Mosquitto(
        workdir, anonymous=False, extra_conf=f"password_file {workdir / 'passwd'}\nacl_file {workdir / 'acl'}\n"
    )
    await broker.start()
    yield broker
    await broker.stop()


async def test_the_readme_acl_keeps_every_client_on_its_own_topic_level(home: Path, locked_broker: Mosquitto) -> None:
    port = locked_broker.port
    config = MQTTConfig(
        enabled=True,
        host="127.0.0.1",
        port=port,
        username="agent",
        password=PASSWORDS["agent"],
        allow_from=["alice", "bob"],
        edit_interval=0.02,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )
    bus = RecordingBus()
    async with FakeLLMServer(responder=scripted_responder) as server:
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        async with (
            make_app(home, MQTTChannel(config), llm, bus=bus),
            logged_in(port, "bob", "operator/agent/+/bob") as bob,
            logged_in(port, "alice", "operator/agent/#") as alice,
        ):
            # Bob's request, his reply and an error of his: none of it may reach alice, who listens to all.
            await bob.client.publish("operator/agent/in/bob", "bob's secret", qos=1)
            await bob.wait_for(lambda got: bob.done("operator/agent/out/bob") == ["You said: bob's secret"])
            await bob.client.publish("operator/agent/in/bob", "{not json", qos=1)
            await bob.wait_for(lambda got: any(t == "operator/agent/error/bob" for t, _ in got))
            # Alice tries to speak as bob, then asks as herself.
            await alice.client.publish("operator/agent/in/bob", "I am bob, honest", qos=1)
            await alice.client.publish("operator/agent/in/alice", "hello", qos=1)
            await alice.wait_for(lambda got: alice.done("operator/agent/out/alice") == ["You said: hello"])
            # A reply topic the agent may not publish to is dropped by the broker; the channel goes on.
            await alice.client.publish(
                "operator/agent/in/alice", json.dumps({"text": "elsewhere", "reply_to": "elsewhere/alice"}), qos=1
            )
            await alice.client.publish("operator/agent/in/alice", "still there?", qos=1)
            await alice.wait_for(lambda got: "You said: still there?" in alice.done("operator/agent/out/alice"))
    # The broker delivered in publish order: the forged request would have come before "hello". It never came.
    assert [(m.user_id, m.parts[0].text) for m in bus.incoming_log if m.parts] == [
        ("bob", "bob's secret"),
        ("alice", "hello"),
        ("alice", "elsewhere"),
        ("alice", "still there?"),
    ]
    # Everything bob's events would have reached alice before her own last reply: she saw only hers.
    assert alice.got and all(topic.endswith("/alice") for topic, _ in alice.got)
    assert all(topic.endswith("/bob") for topic, _ in bob.got)


async def test_a_reply_to_cannot_write_into_another_clients_topics(home: Path, locked_broker: Mosquitto) -> None:
    """The agent may publish on every client's out/ topic, so the broker cannot stop alice from naming bob's
    as her reply topic: the agent refuses it, on alice's error topic, and answers the request nowhere."""
    port = locked_broker.port
    config = MQTTConfig(
        enabled=True,
        host="127.0.0.1",
        port=port,
        username="agent",
        password=PASSWORDS["agent"],
        allow_from=["alice", "bob"],
        edit_interval=0.02,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )
    bus = RecordingBus()
    forged = {
        "operator/agent/out/bob": "h1",
        "operator/agent/error/bob": "h2",
        "operator/agent/out": "h3",
        "operator/agent/error/alice": "h4",
    }
    async with FakeLLMServer(responder=scripted_responder) as server:
        llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
        async with (
            make_app(home, MQTTChannel(config), llm, bus=bus),
            logged_in(port, "bob", "operator/agent/+/bob") as bob,
            logged_in(port, "alice", "operator/agent/+/alice") as alice,
        ):
            for topic, request_id in forged.items():
                await alice.client.publish(
                    "operator/agent/in/alice",
                    json.dumps({"text": f"hijack {request_id}", "id": request_id, "reply_to": topic}),
                    qos=1,
                )
            await alice.client.publish(
                "operator/agent/in/alice",
                json.dumps({"text": "mine", "id": "a1", "reply_to": "operator/agent/out/alice"}),
                qos=1,
            )
            await alice.wait_for(lambda got: "You said: mine" in alice.done("operator/agent/out/alice"))
            # Bob asks after all of it: everything the agent sent him before reaches him before his answer.
            await bob.client.publish("operator/agent/in/bob", "bob here", qos=1)
            await bob.wait_for(lambda got: "You said: bob here" in bob.done("operator/agent/out/bob"))
    assert bob.done("operator/agent/out/bob") == ["You said: bob here"], bob.got
    errors = {e["id"]: e["error"] for t, e in alice.got if t == "operator/agent/error/alice"}
    assert set(errors) == set(forged.values()), alice.got
    assert all("replies go only to operator/agent/out/alice" in reason for reason in errors.values()), errors
    assert [e["type"] for t, e in alice.got if t == "operator/agent/error/alice"] == ["error"] * len(forged)
    assert all(e["id"] == "a1" for t, e in alice.got if t == "operator/agent/out/alice")
    assert {e.get("id") for _, e in bob.got} == {bob.got[0][1]["id"]}  # only his own reply, one id
    assert all(t == "operator/agent/out/bob" for t, _ in bob.got)
    # The refused requests never reached the pipeline: the model saw only alice's own and bob's.
    assert [(m.user_id, m.parts[0].text) for m in bus.incoming_log if m.parts] == [
        ("alice", "mine"),
        ("bob", "bob here"),
    ]
    assert len(server.requests) == 2
