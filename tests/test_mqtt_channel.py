"""The MQTT channel end to end: a real Mosquitto broker on 127.0.0.1, the real mosquitto_pub/mosquitto_sub
clients and aiomqtt on the other side, and the whole pipeline (orchestrator, agent, real OpenAI SDK against
the fake LLM server, gateway) in between."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from operator_use.channels.base import NotModified, RetryAfter
from operator_use.channels.mqtt.channel import MQTTChannel
from operator_use.channels.mqtt.config import MQTTConfig
from operator_use.channels.mqtt.payloads import BadRequest, check_reply_topic, parse_request
from operator_use.messages import Address, AudioPart, StreamDone
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, Reply
from .support.deps import require_binary, require_module
from .support.mqtt import Mosquitto, Subscriber, publish
from .support.pipeline import Gates, TappedBus, make_app, scripted_responder

IN = "operator/agent/in/"
OUT = "operator/agent/out/"
ERR = "operator/agent/error/"


@pytest.fixture
async def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_module("aiomqtt")
    require_binary("mosquitto_pub")
    require_binary("mosquitto_sub")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Mosquitto(workdir)
    await b.start()
    yield b
    await b.stop()


def config(broker: Mosquitto, **kw: Any) -> MQTTConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": broker.port,
        "allow_from": ["alice", "bob"],
        "admins": ["alice"],
        "edit_interval": 0.02,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
    }
    settings.update(kw)
    return MQTTConfig(**settings)


def llm(server: FakeLLMServer) -> OpenAILLM:
    return OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition that has no event to wait on (a channel's connection state), with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def deltas_text(events: list[dict[str, Any]]) -> str:
    """What a client shows after applying delta and replace events in order. Delivery is at least once: a
    delta repeated after a reconnection starts before the end of the text (its offset), and is skipped."""
    text = ""
    for e in events:
        if e["type"] == "delta" and e["offset"] == len(text):
            text += e["delta"]
        elif e["type"] == "delta":
            assert e["offset"] < len(text) and text[e["offset"] :].startswith(e["delta"]), (e, text)
        elif e["type"] == "replace":
            text = e["text"]
    return text


# --- streaming ---------------------------------------------------------------------------------


def gated_reply(name: str = "g1") -> Reply:
    """Text, then a call to the gate tool: the text is flushed at the tool call, and the reply goes on only
    when the test opens the gate (so a test can act between the first delta and the rest)."""
    return Reply(text="Let me check.", tool_calls=[{"name": "gate", "arguments": {"name": name}}])


async def test_text_request_streams_delta_events_and_a_done_with_the_full_text(home: Path, broker: Mosquitto) -> None:
    rest = "Streaming over MQTT: every piece of this answer arrives as a delta event."
    answer = "Let me check.\n\n" + rest
    gates = Gates()
    script = [gated_reply(), Reply(text=rest, chunk_size=4, delay_per_chunk=0.01)]
    async with FakeLLMServer(script) as server, Subscriber(broker.port, OUT + "alice") as sub:
        async with make_app(home, MQTTChannel(config(broker)), llm(server), tools=[gates.tool()]):
            await publish(broker.port, IN + "alice", "hello over mqtt")
            await sub.wait_for(lambda: any(e["type"] == "delta" for e in sub.events()))
            assert not any(e["type"] == "done" for e in sub.events())
            gates.release["g1"].set()
            await sub.wait_for(lambda: any(e["type"] == "done" for e in sub.events()))
    events = sub.events()
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-2:] == ["end", "done"], types
    assert "replace" not in types
    deltas = [e["delta"] for e in events if e["type"] == "delta"]
    assert len(deltas) >= 2 and deltas[0] == "Let me check."
    assert "".join(deltas) == answer == deltas_text(events)
    assert events[-1]["text"] == answer
    # Every event carries the request's id (generated for a plain-text request).
    ids = {e["id"] for e in events}
    assert len(ids) == 1 and ids.pop()
    assert server.requests[0]["messages"][-1]["content"] == "hello over mqtt"


async def test_json_request_id_v5_response_topic_and_reply_to_with_aiomqtt(home: Path, broker: Mosquitto) -> None:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    async with FakeLLMServer(responder=scripted_responder) as server:
        async with (
            make_app(home, MQTTChannel(config(broker)), llm(server)),
            aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
        ):
            await client.subscribe("replies/alice/#", qos=1)
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "replies/alice/v5"
            props.CorrelationData = b"\x00corr-7"
            await client.publish(IN + "alice", json.dumps({"text": "ping", "id": "req-7"}), qos=1, properties=props)
            await client.publish(
                IN + "alice", json.dumps({"text": "pong", "id": 8, "reply_to": "replies/alice/json"}), qos=1
            )
            got: list[tuple[str, dict[str, Any], Any]] = []
            async with asyncio.timeout(20):
                async for message in client.messages:
                    got.append((message.topic.value, json.loads(message.payload), message.properties))
                    if sum(1 for _, e, _ in got if e["type"] == "done") == 2:
                        break
    v5 = [(e, p) for t, e, p in got if t == "replies/alice/v5"]
    assert {e["id"] for e, _ in v5} == {"req-7"}
    assert next(e for e, _ in v5 if e["type"] == "done")["text"] == "You said: ping"
    assert all(getattr(p, "CorrelationData", None) == b"\x00corr-7" for _, p in v5)
    by_json = [e for t, e, _ in got if t == "replies/alice/json"]
    assert {e["id"] for e in by_json} == {"8"}
    assert by_json[-1] == {"type": "done", "id": "8", "text": "You said: pong"}


async def test_final_mode_publishes_one_done_event(home: Path, broker: Mosquitto) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "bob") as sub:
        async with make_app(home, MQTTChannel(config(broker, stream="final")), llm(server)):
            await publish(broker.port, IN + "bob", json.dumps({"text": "just the answer", "id": "f1"}))
            await sub.wait_for(lambda: sub.done("f1") is not None)
            # A second request: nothing else arrived for the first one in between.
            await publish(broker.port, IN + "bob", json.dumps({"text": "again", "id": "f2"}))
            await sub.wait_for(lambda: sub.done("f2") is not None)
    assert sub.events() == [
        {"type": "done", "id": "f1", "text": "You said: just the answer"},
        {"type": "done", "id": "f2", "text": "You said: again"},
    ]


async def test_status_command_over_mqtt_shows_the_channel_up(home: Path, broker: Mosquitto) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "alice") as sub:
        async with make_app(home, MQTTChannel(config(broker)), llm(server)):
            await publish(broker.port, IN + "alice", json.dumps({"text": "/status", "id": "s1"}))
            await sub.wait_for(lambda: sub.done("s1") is not None)
    assert "mqtt up" in sub.done("s1")["text"]  # type: ignore[index]


async def test_enabled_in_the_configuration_the_registry_builds_it(
    home: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    from operator_use.app import App
    from operator_use.config import load_config

    monkeypatch.setenv("OPERATOR_CHANNELS__MQTT__PASSWORD", "from-the-environment")
    cfg = load_config(
        home=home,
        agent={"workspace": home / "workspace"},
        channels={
            "cli": {"enabled": False},
            "web": {"enabled": False},
            "mqtt": {"enabled": True, "port": broker.port, "agent": "den", "allow_from": ["alice"]},
        },
    )
    assert cfg.channels.mqtt.password is not None
    assert cfg.channels.mqtt.password.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in json.dumps(cfg.masked(), default=str)
    async with (
        FakeLLMServer(responder=scripted_responder) as server,
        Subscriber(broker.port, "operator/den/out/alice") as sub,
    ):
        async with App(cfg, llm=llm(server), tools=[]) as app:
            assert [type(c).__name__ for c in app.channels] == ["MQTTChannel"]
            await publish(broker.port, "operator/den/in/alice", json.dumps({"text": "hi", "id": "c1"}))
            await sub.wait_for(lambda: sub.done("c1") is not None)
    assert sub.done("c1")["text"] == "You said: hi"  # type: ignore[index]


# --- audio -------------------------------------------------------------------------------------


async def test_json_request_with_audio_is_transcribed_and_answered(home: Path, broker: Mosquitto) -> None:
    heard: list[AudioPart] = []

    async def transcribe(audio: AudioPart) -> str:
        # A stand-in for speech-to-text at the orchestrator's `transcribe` hook: the "audio" spells its text.
        heard.append(audio)
        return audio.data.decode().removeprefix("SPEECH:")

    audio = base64.b64encode(b"SPEECH:turn on the kitchen lights").decode()
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "alice") as sub:
        async with make_app(home, MQTTChannel(config(broker)), llm(server)) as app:
            assert app.orchestrator is not None
            app.orchestrator.transcribe = transcribe
            await publish(
                broker.port, IN + "alice", json.dumps({"audio": {"data": audio, "mime": "audio/wav"}, "id": "v1"})
            )
            await sub.wait_for(lambda: sub.done("v1") is not None)
    assert sub.done("v1")["text"] == "You said: turn on the kitchen lights"  # type: ignore[index]
    assert heard[0].mime == "audio/wav" and heard[0].data == b"SPEECH:turn on the kitchen lights"


async def test_real_speech_in_a_json_request_is_transcribed_by_local_whisper_and_answered(
    home: Path, broker: Mosquitto
) -> None:
    from .support.speech import espeak_pcm, need_voice_stack, voice_note, words

    need_voice_stack()
    note = voice_note(await espeak_pcm("What is the weather in Paris tomorrow?"))
    request = {"audio": {"data": base64.b64encode(note.data).decode(), "mime": note.mime}, "id": "w1"}
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "alice") as sub:
        # No hook set by the test: the app's own voice service (faster-whisper, local model) listens.
        async with make_app(home, MQTTChannel(config(broker)), llm(server)) as app:
            assert type(app.voice.transcriber).__name__ == "LocalWhisper"
            await publish(broker.port, IN + "alice", json.dumps(request))
            await sub.wait_for(lambda: sub.done("w1") is not None, timeout=90)
    heard = sub.done("w1")["text"]  # type: ignore[index]
    assert heard.startswith("You said: ") and {"weather", "paris", "tomorrow"} <= words(heard), heard


# --- persistence and reconnection --------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_request_published_while_the_agent_is_stopped_is_answered_after_restart(
    home: Path, broker: Mosquitto, protocol: str
) -> None:
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "alice") as sub:
        async with make_app(home, MQTTChannel(config(broker, protocol=protocol)), llm(server)):
            await publish(broker.port, IN + "alice", json.dumps({"text": "first", "id": "r1"}))
            await sub.wait_for(lambda: sub.done("r1") is not None)
        # The agent is stopped; the broker keeps its session and queues this QoS 1 request for it.
        await publish(
            broker.port, IN + "alice", json.dumps({"text": "while you were away", "id": "r2"}), protocol=protocol
        )
        assert len(server.requests) == 1
        async with make_app(home, MQTTChannel(config(broker, protocol=protocol)), llm(server)):
            await sub.wait_for(lambda: sub.done("r2") is not None)
    assert sub.done("r2")["text"] == "You said: while you were away"  # type: ignore[index]


async def test_broker_killed_and_restarted_mid_conversation_loses_no_request(
    home: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.channels.mqtt")
    rest = "This reply was being written when the broker went away, and it still arrives whole."
    answer = "Let me check.\n\n" + rest
    gates = Gates()
    channel = MQTTChannel(config(broker))
    sub = await Subscriber(broker.port, OUT + "alice", client_id="tester", persistent=True).start()
    script = [gated_reply(), Reply(text=rest, chunk_size=4)]
    async with FakeLLMServer(script, responder=scripted_responder) as server:
        async with make_app(home, channel, llm(server), tools=[gates.tool()]) as app:
            assert app.gateway is not None
            await publish(broker.port, IN + "alice", json.dumps({"text": "tell me a story", "id": "q1"}))
            await sub.wait_for(lambda: any(e["type"] == "delta" for e in sub.events(request_id="q1")))
            await sub.stop()
            await broker.stop()  # mid-reply
            await until(lambda: channel.status() == "reconnecting")
            assert app.gateway.status()["mqtt"] == "reconnecting"  # what /status shows
            # The model finishes while the broker is down: the rest of the reply waits in the outbox.
            gates.release["g1"].set()
            await until(lambda: any(b'"done"' in item.payload for item in channel._outbox))
            await broker.start()
            # A request published right after the restart, whether or not the agent is back yet.
            await publish(broker.port, IN + "alice", json.dumps({"text": "are you back?", "id": "q2"}))
            sub2 = await Subscriber(broker.port, OUT + "alice", client_id="tester", persistent=True).start()
            try:
                await sub2.wait_for(lambda: sub2.done("q1") is not None and sub2.done("q2") is not None)
            finally:
                await sub2.stop()
            assert channel.status() == "up" and app.gateway.status()["mqtt"] == "up"
    assert sub2.done("q1")["text"] == answer  # type: ignore[index]
    assert deltas_text(sub.events(request_id="q1") + sub2.events(request_id="q1")) == answer
    assert sub2.done("q2")["text"] == "You said: are you back?"  # type: ignore[index]
    assert channel.connections == 2
    assert "connection to 127.0.0.1" in caplog.text and "lost" in caplog.text


async def test_reconnects_with_backoff_and_subscribes_again_to_a_broker_that_lost_its_sessions(
    home: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="operator_use.channels.mqtt")
    channel = MQTTChannel(config(broker))
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, OUT + "alice") as sub:
        async with make_app(home, channel, llm(server)):
            await sub.stop()
            await broker.stop()
            (broker.workdir / "mosquitto.db").unlink()  # the new broker knows nothing of our subscription
            # Stays down through a few attempts; each failure is logged with the next, longer, delay.
            await until(lambda: caplog.text.count("reconnect to 127.0.0.1") >= 3)
            await broker.start()
            await until(lambda: channel.connections == 2)
            async with Subscriber(broker.port, OUT + "alice") as sub2:
                await publish(broker.port, IN + "alice", json.dumps({"text": "anyone there?", "id": "n1"}))
                await sub2.wait_for(lambda: sub2.done("n1") is not None)
    assert sub2.done("n1")["text"] == "You said: anyone there?"  # type: ignore[index]
    delays = [float(line.rsplit("next try in ", 1)[1].rstrip("s")) for line in caplog.messages if "next try in" in line]
    assert delays[:3] == sorted(delays[:3]) and delays[0] < delays[2] <= 0.5


async def test_replies_queue_bounded_while_the_broker_is_down(home: Path, broker: Mosquitto) -> None:
    rest = " ".join(f"word{i}" for i in range(80))
    answer = "Let me check.\n\n" + rest
    gates = Gates()
    channel = MQTTChannel(config(broker, max_pending=10))
    bus = TappedBus()
    sub = await Subscriber(broker.port, OUT + "alice", client_id="tester", persistent=True).start()
    script = [gated_reply(), Reply(text=rest, chunk_size=3, delay_per_chunk=0.005)]
    async with FakeLLMServer(script) as server:
        async with make_app(home, channel, llm(server), bus=bus, tools=[gates.tool()]):
            await publish(broker.port, IN + "alice", json.dumps({"text": "long", "id": "L"}))
            await sub.wait_for(lambda: any(e["type"] == "delta" for e in sub.events(request_id="L")))
            await sub.stop()
            await broker.stop()
            await until(lambda: channel.status() == "reconnecting")
            gates.release["g1"].set()
            # Many edits arrive while disconnected; the outbox stops at its bound and the stream editor
            # keeps the latest text instead (RetryAfter), so nothing is lost and memory stays bounded.
            await until(lambda: any(isinstance(i, StreamDone) for i in bus.outgoing_log) and channel.pending >= 10)
            assert channel.pending <= 10
            await broker.start()
            sub2 = await Subscriber(broker.port, OUT + "alice", client_id="tester", persistent=True).start()
            try:
                await sub2.wait_for(lambda: sub2.done("L") is not None)
            finally:
                await sub2.stop()
    assert sub2.done("L")["text"] == answer  # type: ignore[index]
    assert deltas_text(sub.events(request_id="L") + sub2.events(request_id="L")) == answer


# --- bad input and strangers -------------------------------------------------------------------

BAD_PAYLOADS = {
    "invalid-utf8": (b"\xff\xfe turn on \xc3", "not valid UTF-8", None),
    "invalid-json": (b'{"text": "hi", "id": ', "not valid JSON", None),
    "oversize": (b"x" * 9000, "payload too large: 9000 bytes", None),
    # What json.loads and int() raise on, and JSON escapes that spell text no UTF-8 encoder takes.
    "deep-nesting": (b'{"text": "hi", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply", None),
    "huge-id": (b'{"text": "hi", "id": ' + b"9" * 5000 + b"}", "4300 digits", None),
    "surrogate-text": (b'{"text": "hi \\ud800", "id": "s1"}', "text is not valid Unicode", "s1"),
    "surrogate-id": (b'{"text": "hi", "id": "\\udfff"}', "id is not valid Unicode", None),
    "bad-base64": (
        json.dumps({"audio": {"data": "not*base64!", "mime": "audio/ogg"}, "id": "b1"}).encode(),
        "audio.data is not valid base64",
        "b1",
    ),
    "no-text": (json.dumps({"text": "", "id": "b2"}).encode(), "neither text nor audio", "b2"),
    "loop-reply-to": (json.dumps({"text": "hi", "reply_to": IN + "bob"}).encode(), "request topics", None),
    # The agent may publish on every client's topics: a reply_to there would write into another's replies.
    "others-reply-to": (
        json.dumps({"text": "hi", "reply_to": OUT + "bob", "id": "h1"}).encode(),
        "replies go only to operator/agent/out/alice",
        "h1",
    ),
    "other-agents-reply-to": (
        json.dumps({"text": "hi", "reply_to": "operator/kitchen/in/bob"}).encode(),
        "another agent's topic",
        None,
    ),
}


@pytest.mark.parametrize("kind", list(BAD_PAYLOADS))
async def test_bad_payload_gets_an_error_event_and_the_next_request_is_answered(
    home: Path, broker: Mosquitto, kind: str
) -> None:
    payload, reason, request_id = BAD_PAYLOADS[kind]
    async with (
        FakeLLMServer(responder=scripted_responder) as server,
        Subscriber(broker.port, [OUT + "alice", ERR + "alice"]) as sub,
    ):
        async with make_app(home, MQTTChannel(config(broker, max_payload_bytes=8192)), llm(server)):
            await publish(broker.port, IN + "alice", payload)
            await sub.wait_for(lambda: bool(sub.events(ERR + "alice")))
            await publish(broker.port, IN + "alice", json.dumps({"text": "still there?", "id": "ok"}))
            await sub.wait_for(lambda: sub.done("ok", OUT + "alice") is not None)
    [error] = sub.events(ERR + "alice")
    assert error["type"] == "error" and reason in error["error"] and error["id"] == request_id
    assert sub.done("ok")["text"] == "You said: still there?"  # type: ignore[index]
    assert len(server.requests) == 1  # the bad payload never reached the model


async def test_reply_topics_stay_off_other_clients_and_agents_but_custom_ones_work(
    home: Path, broker: Mosquitto
) -> None:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    requests = {
        "h1": OUT + "bob",
        "h2": ERR + "bob",
        "h3": "operator/kitchen/out/bob",
        "ok1": OUT + "alice/panel",
        "ok2": "devices/panel/replies",
    }
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, "#") as sub:
        async with (
            make_app(home, MQTTChannel(config(broker)), llm(server)),
            aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
        ):
            for request_id, topic in requests.items():
                await publish(
                    broker.port, IN + "alice", json.dumps({"text": request_id, "id": request_id, "reply_to": topic})
                )
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = OUT + "bob"
            await client.publish(IN + "alice", json.dumps({"text": "v5", "id": "h4"}), qos=1, properties=props)
            await publish(broker.port, IN + "alice", json.dumps({"text": "last", "id": "ok3"}))
            await sub.wait_for(
                lambda: all(sub.done(i) for i in ("ok1", "ok2", "ok3")) and len(sub.events(ERR + "alice")) == 4
            )
    errors = {e["id"]: e["error"] for e in sub.events(ERR + "alice")}
    assert set(errors) == {"h1", "h2", "h3", "h4"}
    assert "replies go only to operator/agent/out/alice" in errors["h1"] and errors["h4"].startswith(
        "the response topic cannot be another of the agent's topics"
    )
    assert "another agent's topic" in errors["h3"]
    assert sub.done("ok1", OUT + "alice/panel")["text"] == "You said: ok1"  # type: ignore[index]
    assert sub.done("ok2", "devices/panel/replies")["text"] == "You said: ok2"  # type: ignore[index]
    assert {t for t, _ in sub.messages} == {
        IN + "alice",
        ERR + "alice",
        OUT + "alice/panel",
        "devices/panel/replies",
        OUT + "alice",
    }
    assert len(server.requests) == 3  # the refused requests were answered nowhere


async def test_reply_topics_filters_with_the_senders_level(home: Path, broker: Mosquitto) -> None:
    requests = {
        "ok1": "devices/alice/replies",
        "ok2": OUT + "alice",
        "no1": "devices/bob/replies",
        "no2": "elsewhere/x",
        "no3": "devices/alice/replies/more",
    }
    async with FakeLLMServer(responder=scripted_responder) as server, Subscriber(broker.port, "#") as sub:
        async with make_app(home, MQTTChannel(config(broker, reply_topics=["devices/{client}/replies"])), llm(server)):
            for request_id, topic in requests.items():
                await publish(
                    broker.port, IN + "alice", json.dumps({"text": request_id, "id": request_id, "reply_to": topic})
                )
            # Refusals and replies travel separately: wait for all five outcomes, not only the replies.
            await sub.wait_for(
                lambda: (
                    sub.done("ok1") is not None and sub.done("ok2") is not None and len(sub.events(ERR + "alice")) == 3
                )
            )
    assert sub.done("ok1", "devices/alice/replies") and sub.done("ok2", OUT + "alice")
    errors = {e["id"]: e["error"] for e in sub.events(ERR + "alice")}
    assert set(errors) == {"no1", "no2", "no3"}
    assert all("matches none of the allowed reply topics" in reason for reason in errors.values())
    assert {t for t, _ in sub.messages} == {IN + "alice", ERR + "alice", "devices/alice/replies", OUT + "alice"}
    assert len(server.requests) == 2


async def test_unknown_client_gets_nothing(home: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with (
        FakeLLMServer(responder=scripted_responder) as server,
        Subscriber(broker.port, [OUT + "mallory", ERR + "mallory", "elsewhere/#"]) as stranger,
        Subscriber(broker.port, OUT + "alice") as sub,
    ):
        async with make_app(home, MQTTChannel(config(broker)), llm(server)):
            await publish(broker.port, IN + "mallory", "hello, let me in")
            await publish(broker.port, IN + "mallory", json.dumps({"text": "/status", "id": "m2"}))
            await publish(broker.port, IN + "mallory", b'{"broken')
            await publish(broker.port, IN + "mallory", json.dumps({"text": "hi", "reply_to": "elsewhere/x"}))
            # Requests are handled in arrival order: once alice is answered, mallory's were all handled.
            await publish(broker.port, IN + "alice", json.dumps({"text": "hi", "id": "a1"}))
            await sub.wait_for(lambda: sub.done("a1") is not None)
    assert stranger.messages == []
    assert len(server.requests) == 1
    assert caplog.text.count("denied message from mqtt user mallory") == 3


async def test_username_and_password(home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_module("aiomqtt")
    passwd = require_binary("mosquitto_passwd")
    workdir = tmp_path / "secure"
    workdir.mkdir()
    subprocess.run([passwd, "-b", "-c", str(workdir / "passwd"), "agent", "s3cret-pw"], check=True)
    secured = Mosquitto(workdir, anonymous=False, extra_conf=f"password_file {workdir / 'passwd'}\n")
    await secured.start()
    try:
        caplog.set_level(logging.DEBUG)
        bad = MQTTChannel(config(secured, username="agent", password="wr0ng-pw"))
        with pytest.raises(Exception, match=r"[Nn]ot authori[sz]ed|[Bb]ad user name or password"):
            await bad.connect()
        assert bad.status() == "down"
        good = config(secured, username="agent", password="s3cret-pw")
        async with FakeLLMServer(responder=scripted_responder) as server:
            async with make_app(home, MQTTChannel(good), llm(server)) as app:
                assert app.gateway is not None and app.gateway.status()["mqtt"] == "up"
        assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in repr(good) and "wr0ng-pw" not in caplog.text
    finally:
        await secured.stop()


async def test_a_blocked_client_does_not_hold_up_another(home: Path, broker: Mosquitto) -> None:
    gates = Gates()
    async with (
        FakeLLMServer(responder=scripted_responder) as server,
        Subscriber(broker.port, [OUT + "alice", OUT + "bob"]) as sub,
    ):
        async with make_app(home, MQTTChannel(config(broker)), llm(server), tools=[gates.tool()]):
            await publish(broker.port, IN + "alice", json.dumps({"text": "block g1", "id": "a"}))
            await gates.wait_entered("g1")
            await publish(broker.port, IN + "bob", json.dumps({"text": "quick one", "id": "b"}))
            await sub.wait_for(lambda: sub.done("b", OUT + "bob") is not None)
            assert sub.done("a") is None
            gates.release["g1"].set()
            await sub.wait_for(lambda: sub.done("a", OUT + "alice") is not None)
    assert sub.done("a")["text"] == "done: gate g1 opened in chat alice"  # type: ignore[index]


# --- the gateway primitives, without a broker -----------------------------------------------------


def queued(channel: MQTTChannel) -> list[dict[str, Any]]:
    return [json.loads(item.payload) for item in channel._outbox]


async def test_edits_become_delta_or_replace_events_and_finalize_ends_with_done() -> None:
    channel = MQTTChannel(MQTTConfig(enabled=True, allow_from=["alice"]))
    address = Address(channel="mqtt", chat_id="alice")
    mid = await channel.send(address, "Hello wor", reply_to="r1")
    await channel.edit(address, mid, "Hello world")
    with pytest.raises(NotModified):
        await channel.edit(address, mid, "Hello world")
    await channel.edit(address, mid, "Hi there")  # not an extension: the whole text again
    await channel.finalize(address, mid)
    await channel.finalize(address, mid)  # twice is harmless
    assert queued(channel) == [
        {"type": "start", "id": "r1"},
        {"type": "delta", "id": "r1", "delta": "Hello wor", "offset": 0},
        {"type": "delta", "id": "r1", "delta": "ld", "offset": 9},
        {"type": "replace", "id": "r1", "text": "Hi there"},
        {"type": "end", "id": "r1"},
        {"type": "done", "id": "r1", "text": "Hi there"},
    ]
    assert {item.topic for item in channel._outbox} == {OUT + "alice"}


async def test_full_outbox_makes_edits_wait_but_never_drops_a_start_or_done() -> None:
    channel = MQTTChannel(MQTTConfig(enabled=True, allow_from=["alice"], max_pending=10))
    address = Address(channel="mqtt", chat_id="alice")
    mid = await channel.send(address, "a")
    for i in range(8):
        await channel.edit(address, mid, "a" * (i + 2))
    assert channel.pending == 10
    with pytest.raises(RetryAfter):
        await channel.edit(address, mid, "a" * 20)
    # Sends and finalizes always queue: only the edits, which come at the editor's pace, are held back.
    await channel.finalize(address, mid)
    other = await channel.send(address, "b")
    await channel.finalize(address, other)
    assert channel.pending == 16
    assert queued(channel)[10:] == [
        {"type": "end", "id": None},
        {"type": "done", "id": None, "text": "a" * 9},
        {"type": "start", "id": None},
        {"type": "delta", "id": None, "delta": "b", "offset": 0},
        {"type": "end", "id": None},
        {"type": "done", "id": None, "text": "b"},
    ]
    final = MQTTChannel(MQTTConfig(enabled=True, stream="final"))
    mid = await final.send(address, "x")
    await final.edit(address, mid, "xy")
    await final.finalize(address, mid)
    assert queued(final) == [{"type": "done", "id": None, "text": "xy"}]


# --- pure parsing ------------------------------------------------------------------------------


def test_parse_request_forms() -> None:
    assert parse_request(b"plain words", max_bytes=100).text == "plain words"
    assert parse_request(b"[1, 2]", max_bytes=100).text == "[1, 2]"  # only "{" means JSON
    req = parse_request(
        json.dumps(
            {"text": "t", "id": 5, "reply_to": "a/b", "audio": {"data": base64.b64encode(b"abc").decode()}}
        ).encode(),
        max_bytes=1000,
    )
    assert (req.text, req.id, req.reply_to, req.audio.data, req.audio.mime) == ("t", "5", "a/b", b"abc", "audio/ogg")
    for bad in (
        b"   ",
        b'{"text": 3}',
        b'{"id": true, "text": "x"}',
        b'{"text": ["x"]}',
        b'{"reply_to": 1, "text": "x"}',
        b'{"audio": {"data": "YWJj", "mime": "text/plain"}}',
        b'{"audio": {"data": ""}}',
    ):
        with pytest.raises(BadRequest):
            parse_request(bad, max_bytes=100)
    assert check_reply_topic("a/+/c", "operator/agent") and check_reply_topic("$SYS/x", "operator/agent")
    assert check_reply_topic("devices/lamp/replies", "operator/agent") is None
    assert check_reply_topic(OUT + "alice", "operator/agent")  # without a sender, no out/ topic is its own


@pytest.mark.parametrize(
    "topic, allowed, refusal",
    [
        (OUT + "alice", [], None),
        (OUT + "alice/panel", [], None),
        (OUT + "alice", ["devices/#"], None),  # the sender's own out/ needs no filter
        (OUT + "bob", ["#"], "replies go only to operator/agent/out/alice"),
        (OUT + "alice2", ["#"], "replies go only to"),
        (ERR + "alice", ["#"], "replies go only to"),
        (ERR + "bob", ["#"], "replies go only to"),
        ("operator/agent", ["#"], "replies go only to"),
        ("operator/agent/out", ["#"], "replies go only to"),
        ("operator/agent/whatever/x", ["#"], "replies go only to"),
        (OUT + "bob", ["operator/agent/out/#"], "replies go only to"),  # a filter never opens the agent's topics
        (IN + "alice", ["#"], "request topics"),
        ("operator/kitchen/in/bob", ["#"], "another agent's topic"),
        ("operator/kitchen/out/alice", ["#"], "another agent's topic"),
        ("operator/kitchen/status", ["#"], None),
        ("operator/agentx/out", ["#"], None),
        ("devices/lamp/replies", ["#"], None),
        ("devices/lamp/replies", [], "custom reply topics are off"),
        ("devices/alice/replies", ["devices/{client}/replies"], None),
        ("devices/bob/replies", ["devices/{client}/replies"], "matches none"),
        ("devices/alice", ["devices/{client}/replies"], "matches none"),
        ("panel/a/b/c", ["x/y", "panel/+/#"], None),
        ("panel", ["panel/#"], None),  # as in MQTT, "a/#" matches "a" too
        ("panels/a", ["panel/#"], "matches none"),
        ("panel/a/b", ["panel/+"], "matches none"),
    ],
)
def test_reply_topic_rules(topic: str, allowed: list[str], refusal: str | None) -> None:
    problem = check_reply_topic(topic, "operator/agent", "alice", allowed=allowed)
    assert problem is None if refusal is None else (problem is not None and refusal in problem), problem


def test_reply_topic_filters_are_checked_at_load() -> None:
    assert MQTTConfig().reply_topics == ["#"]
    MQTTConfig(reply_topics=["devices/{client}/replies", "+/x/#", "#", "a//b"])
    for bad in ("", "a/#/b", "a/b#", "a/x+/b", "$SYS/#", "devices/x{client}/r", "a\0b"):
        with pytest.raises(ValueError, match="reply topic filter"):
            MQTTConfig(reply_topics=[bad])


def test_config_rejects_wildcards_and_masks_the_password() -> None:
    with pytest.raises(ValueError):
        MQTTConfig(agent="a/b")
    with pytest.raises(ValueError):
        MQTTConfig(topic_prefix="home/#")
    c = MQTTConfig(agent="kitchen", password="pw")
    assert c.identifier == "operator-use-kitchen" and c.base_topic == "operator/kitchen"
    assert "pw" not in str(c.model_dump(mode="json"))


# --- TLS ---------------------------------------------------------------------------------------


def make_certificates(openssl: str, where: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=where)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=operator-use test CA",
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        )
    return {n: where / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


async def test_tls_with_a_client_certificate(home: Path, tmp_path: Path) -> None:
    aiomqtt = require_module("aiomqtt")
    certs = make_certificates(require_binary("openssl"), tmp_path)
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    tls_broker = Mosquitto(
        workdir,
        extra_conf=(
            f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\n"
            f"keyfile {certs['server.key']}\nrequire_certificate true\n"
        ),
    )
    await tls_broker.start()
    try:
        # Without a client certificate, or without our CA, the handshake fails and start() raises.
        for kw in (
            {"tls_ca": certs["ca.crt"]},
            {"tls": True, "tls_cert": certs["client.crt"], "tls_key": certs["client.key"]},
        ):
            with pytest.raises(aiomqtt.MqttError):
                await MQTTChannel(config(tls_broker, timeout=2, **kw)).connect()
        secure = config(tls_broker, tls_ca=certs["ca.crt"], tls_cert=certs["client.crt"], tls_key=certs["client.key"])
        tls = aiomqtt.TLSParameters(
            ca_certs=str(certs["ca.crt"]), certfile=str(certs["client.crt"]), keyfile=str(certs["client.key"])
        )
        async with FakeLLMServer(responder=scripted_responder) as server:
            async with (
                make_app(home, MQTTChannel(secure), llm(server)),
                aiomqtt.Client("127.0.0.1", tls_broker.port, tls_params=tls) as client,
            ):
                await client.subscribe(OUT + "alice", qos=1)
                await client.publish(IN + "alice", json.dumps({"text": "over tls", "id": "t1"}), qos=1)
                async with asyncio.timeout(20):
                    async for message in client.messages:
                        data = json.loads(message.payload)
                        if data["type"] == "done":
                            break
        assert data == {"type": "done", "id": "t1", "text": "You said: over tls"}
    finally:
        await tls_broker.stop()
