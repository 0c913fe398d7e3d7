"""The MQTT channel adapter (aiomqtt, imported only when the channel starts).

Connection: a persistent session (MQTT v5 clean start off with a session expiry, or v3.1.1 clean session
off) under a stable client id, QoS 1 by default, so requests published while the agent is away wait at
the broker. When the broker goes away the channel reconnects with backoff and subscribes again.

Replies: MQTT cannot edit a message, but the gateway's stream editor drives this channel as an editing
one, with the full text at each step; `edit` publishes only the new suffix as a `delta` event (or a
`replace` event when the text changed other than by growing) and `finalize` publishes `end` and `done`.
Every publish goes through one FIFO outbox drained by a single writer while connected, so events keep
their order and replies produced while the broker is down are delivered once it is back (at least once:
an event whose acknowledgement was lost in a disconnection is sent again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ...messages import Address, IncomingMessage, Part, TextPart, new_id
from ..base import Capabilities, Channel, ChannelError, NotModified, RetryAfter
from .client_options import client_options
from .config import MQTTConfig
from .payloads import BadRequest, check_reply_topic, event, parse_request

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger(__name__)

_TRACKED = 1000  # requests and replies remembered for correlation; the oldest are forgotten first
_FLUSH_ON_STOP = 3.0  # seconds given to queued replies to reach the broker when the agent stops
K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Route:
    """Where the replies to one request go."""

    topic: str
    request_id: str | None
    correlation: bytes | None = None


@dataclass
class _Reply:
    route: _Route
    text: str


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    correlation: bytes | None


class MQTTChannel(Channel):
    name = "mqtt"
    capabilities = Capabilities(can_edit=True, max_length=1_000_000, edit_interval=0.2, formatting="markdown")

    def __init__(self, config: MQTTConfig | None = None) -> None:
        self.mqtt_config = config or MQTTConfig(enabled=True)
        super().__init__(self.mqtt_config)
        base = self.mqtt_config.base_topic
        self.request_topic = f"{base}/in/+"
        self._in_prefix = f"{base}/in/"
        self._routes: OrderedDict[tuple[str, str], _Route] = OrderedDict()
        self._replies: OrderedDict[str, _Reply] = OrderedDict()
        self._outbox: deque[_Outgoing] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._client: aiomqtt.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._state = "down"
        self.connections = 0  # successful connections so far

    def out_topic(self, client: str) -> str:
        return f"{self.mqtt_config.base_topic}/out/{client}"

    def error_topic(self, client: str) -> str:
        return f"{self.mqtt_config.base_topic}/error/{client}"

    @property
    def pending(self) -> int:
        """Events waiting for the broker."""
        return len(self._outbox)

    def status(self) -> str:
        return self._state

    # --- connection ---

    async def connect(self) -> None:
        # The first attempt's failure goes back to the gateway, which retries the start with backoff.
        client = await self._open()
        self._runner = asyncio.create_task(self._run(client), name="mqtt-connection")
        self._runner.add_done_callback(_log_failure)

    async def disconnect(self) -> None:
        if self._client is not None and self._outbox:
            try:
                await asyncio.wait_for(self._drained.wait(), _FLUSH_ON_STOP)
            except TimeoutError:
                pass
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        if self._outbox:
            log.warning("mqtt: %d outgoing event(s) not delivered before shutdown", len(self._outbox))
        self._state = "down"

    async def _open(self) -> aiomqtt.Client:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = self.mqtt_config
        kw = client_options(c)
        # The agent's own session, kept at the broker while it is away (what it missed is delivered then).
        if c.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = c.session_expiry
            kw.update(clean_start=False, properties=props)
        else:
            kw.update(clean_session=False)
        client = aiomqtt.Client(
            c.host,
            c.port,
            identifier=c.identifier,
            keepalive=c.keepalive,
            timeout=c.timeout,
            **kw,
        )
        await client.__aenter__()
        try:
            await client.subscribe(self.request_topic, qos=c.qos)
        except BaseException:
            await _close(client)
            raise
        self._client = client
        self._state = "up"
        self.connections += 1
        log.info("mqtt: connected to %s:%s as %s, listening on %s", c.host, c.port, c.identifier, self.request_topic)
        return client

    async def _run(self, client: aiomqtt.Client) -> None:
        c = self.mqtt_config
        while True:
            try:
                await self._serve(client)
            except Exception as exc:  # noqa: BLE001 — a platform library's own errors: the loop must go on
                log.warning("mqtt: connection to %s:%s lost (%s); reconnecting", c.host, c.port, exc)
            self._state = "reconnecting"
            delay = c.reconnect_min
            while True:
                await asyncio.sleep(delay)
                try:
                    client = await self._open()
                    break
                except Exception as exc:  # noqa: BLE001 — a platform library's own errors: the loop must go on
                    delay = min(delay * 2, c.reconnect_max)
                    log.warning("mqtt: reconnect to %s:%s failed (%s); next try in %.1fs", c.host, c.port, exc, delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Read requests and write the outbox until the connection fails (raises) or we are cancelled."""
        tasks = {
            asyncio.create_task(self._read(client), name="mqtt-read"),
            asyncio.create_task(self._write(client), name="mqtt-write"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._client = None
            await _close(client)

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                item = self._outbox[0]
                # Removed only once acknowledged: a publish cut off by a disconnection is sent again.
                await client.publish(
                    item.topic, item.payload, qos=self.mqtt_config.qos, properties=self._publish_properties(item)
                )
                self._outbox.popleft()
            self._drained.set()
            self._wake.clear()
            await self._wake.wait()

    def _publish_properties(self, item: _Outgoing) -> Any:
        if self.mqtt_config.protocol != "5":
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        if item.correlation is not None:
            props.CorrelationData = item.correlation
        return props

    def _enqueue(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        self._drained.clear()
        self._wake.set()

    # --- requests ---

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                await self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mqtt: could not handle a message on %s", message.topic)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if not topic.startswith(self._in_prefix):
            return
        client = topic[len(self._in_prefix) :]
        if message.retain:
            # It would be answered again after every reconnect.
            log.warning("mqtt: ignored a retained request on %s", topic)
            return
        props = message.properties
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        # Unknown clients get nothing from us, not even an error; the orchestrator denies their requests.
        allowed = self.config.allows(client)
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        try:
            request = parse_request(payload, max_bytes=self.mqtt_config.max_payload_bytes)
            reply_topic = request.reply_to or response_topic or self.out_topic(client)
            problem = check_reply_topic(
                reply_topic,
                self.mqtt_config.base_topic,
                client,
                allowed=self.mqtt_config.reply_topics,
                what="reply_to" if request.reply_to else "the response topic",
            )
            if problem:
                raise BadRequest(problem, request.id)
        except BadRequest as exc:
            log.info("mqtt: unreadable request from %s%s: %s", client, "" if allowed else " (unknown)", exc.reason)
            if allowed:
                self._enqueue(
                    _Outgoing(self.error_topic(client), event("error", exc.request_id, error=exc.reason), correlation)
                )
            return
        except Exception:
            # A parser bug must not leave the client waiting for an answer that never comes.
            log.exception("mqtt: reading a request from %s failed", client)
            if allowed:
                self._enqueue(
                    _Outgoing(
                        self.error_topic(client),
                        event("error", None, error="the request could not be read; see the agent's log"),
                        correlation,
                    )
                )
            return
        request_id = request.id or new_id()
        if allowed:
            _remember(self._routes, (client, request_id), _Route(reply_topic, request_id, correlation))
        parts: list[Part] = [TextPart(text=request.text)] if request.text.strip() else []
        if request.audio is not None:
            parts.append(request.audio)
        await self.emit(
            IncomingMessage(channel=self.name, chat_id=client, user_id=client, parts=parts, message_id=request_id)
        )

    # --- replies (called by the gateway) ---

    def _route(self, address: Address, reply_to: str | None) -> _Route:
        route = self._routes.get((address.chat_id, reply_to)) if reply_to else None
        return route or _Route(self.out_topic(address.chat_id), reply_to)

    def _send_event(self, route: _Route, payload: bytes) -> None:
        self._enqueue(_Outgoing(route.topic, payload, route.correlation))

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        route = self._route(address, reply_to)
        message_id = new_id()
        _remember(self._replies, message_id, _Reply(route, text))
        if self.mqtt_config.stream == "events":
            self._send_event(route, event("start", route.request_id))
            self._send_event(route, event("delta", route.request_id, delta=text, offset=0))
        return message_id

    async def edit(self, address: Address, message_id: str, text: str, *, plain: bool = False) -> None:
        reply = self._replies.get(message_id)
        if reply is None:
            raise ChannelError(f"mqtt: no open reply {message_id}", permanent=True)
        if text == reply.text:
            raise NotModified("unchanged")
        if self.mqtt_config.stream == "events":
            if len(self._outbox) >= self.mqtt_config.max_pending:
                # The broker has been away a while: let the stream editor hold the latest text instead.
                raise RetryAfter(1.0, "mqtt outbox full")
            if text.startswith(reply.text):
                # The offset lets a client spot a repeated delta (delivery is at least once).
                self._send_event(
                    reply.route,
                    event("delta", reply.route.request_id, delta=text[len(reply.text) :], offset=len(reply.text)),
                )
            else:
                self._send_event(reply.route, event("replace", reply.route.request_id, text=text))
        reply.text = text

    async def finalize(self, address: Address, message_id: str) -> None:
        reply = self._replies.pop(message_id, None)
        if reply is None:
            return
        if self.mqtt_config.stream == "events":
            self._send_event(reply.route, event("end", reply.route.request_id))
        self._send_event(reply.route, event("done", reply.route.request_id, text=reply.text))


def _remember(store: OrderedDict[K, V], key: K, value: V) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _TRACKED:
        store.popitem(last=False)


async def _close(client: aiomqtt.Client) -> None:
    try:
        await asyncio.wait_for(client.__aexit__(None, None, None), 5)
    except Exception as exc:  # noqa: BLE001 — a platform library's own errors: the loop must go on
        log.debug("mqtt: disconnect: %r", exc)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("mqtt: connection task failed", exc_info=task.exception())
