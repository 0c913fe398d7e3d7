"""Approval requests as buttons, end to end: the real orchestrator and approval gate, the real platform SDKs
(python-telegram-bot, discord.py, slack-bolt) against the fake platform servers. A press must act exactly as
the presser typing the button's command: the requester or an admin decides, anyone else known is refused
with the typed refusal, an unknown sender gets nothing; and the platform's acknowledgement always goes out."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from operator_use.channels.base import Capabilities, Channel
from operator_use.gateway.gateway import Gateway
from operator_use.messages import Address, Button, CloseButtons, IncomingMessage, OutgoingMessage, TextPart

from .fakes.llm_server import FakeLLMServer
from .fakes.telegram_server import TOKEN, BotMessage, FakeTelegram
from .support.apps import build_app
from .support.deps import require_module
from .support.pipeline import TappedBus
from .test_approvals import COMMAND, llm, shell_responder

REFUSED = "Only the person who asked, or an admin, can answer this request."


def proof(home: Path) -> Path:
    return home / "workspace" / "proof.txt"


def shell_app(home: Path, channel: Channel, server: FakeLLMServer) -> Any:
    return build_app(home, channel, llm(server), agent={"tools": ["run_shell"]})  # type: ignore[arg-type]


# --- the gateway: buttons stay with the last chunk ---------------------------------------------


class ButtonChannel(Channel):
    """A channel with buttons and a tiny length limit, recording each send as (text, buttons)."""

    name = "buttons"
    capabilities = Capabilities(can_edit=False, max_length=40, formatting="plain", buttons=True)

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, list[Button]]] = []
        self.closed: list[tuple[str, str]] = []  # (message id, text)
        self.done = asyncio.Event()

    async def connect(self) -> None:
        return None

    async def send(self, address: Address, text: str, *, reply_to: str | None = None, plain: bool = False) -> str:
        self.sent.append((text, []))
        return str(len(self.sent))

    async def send_buttons(
        self, address: Address, text: str, buttons: list[Button], *, reply_to: str | None = None
    ) -> str:
        self.sent.append((text, buttons))
        self.done.set()
        return str(len(self.sent))

    async def close_buttons(self, address: Address, message_id: str, text: str) -> None:
        self.closed.append((message_id, text))
        self.done.set()


class NoButtonChannel(ButtonChannel):
    name = "nobuttons"
    capabilities = Capabilities(can_edit=False, max_length=40, formatting="plain")


async def test_buttons_go_with_the_last_chunk_of_a_split_message() -> None:
    text = " ".join(f"word{i}" for i in range(30))  # about 200 characters: several chunks of at most 40
    buttons = [
        Button(label="Approve", command="/approve ab12", style="primary"),
        Button(label="Deny", command="/deny ab12"),
    ]
    with_buttons, without = ButtonChannel(), NoButtonChannel()
    gateway = Gateway(TappedBus(), [with_buttons, without])
    await gateway.start()
    try:
        for ch in (with_buttons, without):
            gateway.route(
                OutgoingMessage(
                    address=Address(channel=ch.name, chat_id="1"), parts=[TextPart(text=text)], buttons=buttons
                )
            )
        await asyncio.wait_for(with_buttons.done.wait(), 10)
        lanes = [lane.task for lane in gateway._lanes.values() if lane.task is not None]
        await asyncio.gather(*lanes)
    finally:
        await gateway.stop()
    assert len(with_buttons.sent) >= 4
    assert [b for _, b in with_buttons.sent] == [[]] * (len(with_buttons.sent) - 1) + [buttons]
    assert " ".join(t for t, _ in with_buttons.sent).split() == text.split()
    # A channel without buttons gets the same text, as plain sends.
    assert [t for t, _ in without.sent] == [t for t, _ in with_buttons.sent]
    assert all(b == [] for _, b in without.sent)


async def test_close_buttons_edits_the_message_that_carries_them() -> None:
    ch = ButtonChannel()
    gateway = Gateway(TappedBus(), [ch])
    here = Address(channel=ch.name, chat_id="1")
    approve = Button(label="Approve", command="/approve ab12")

    async def deliver(item: OutgoingMessage | CloseButtons) -> None:
        ch.done.clear()
        gateway.route(item)
        await asyncio.wait_for(ch.done.wait(), 10)

    await gateway.start()
    try:
        await deliver(OutgoingMessage(address=here, parts=[TextPart(text="Approve it?")], buttons=[approve]))
        await deliver(
            OutgoingMessage(address=here, parts=[TextPart(text="x" * 35)], buttons=[Button(label="B", command="/b")])
        )
        await deliver(CloseButtons(address=here, commands=["/approve ab12"], note="Approved by alice."))
        # No room for the note within the limit (40): the buttons go all the same.
        await deliver(CloseButtons(address=here, commands=["/b"], note="Approved by alice."))
        # Another chat, or buttons never sent (or already closed): nothing to do.
        gateway.route(CloseButtons(address=Address(channel=ch.name, chat_id="2"), commands=["/b"], note="x"))
        gateway.route(CloseButtons(address=here, commands=["/approve ab12"], note="again"))
        await deliver(OutgoingMessage(address=here, parts=[TextPart(text="end")], buttons=[approve]))
    finally:
        await gateway.stop()
    assert ch.closed == [("1", "Approve it?\n\nApproved by alice."), ("2", "x" * 35)]


# --- Telegram ----------------------------------------------------------------------------------

ALICE = FakeTelegram.user(111, "alice", "Alice")  # allowed, admin
BOB = FakeTelegram.user(222, "bob", "Bob")  # allowed, not an admin
EVE = FakeTelegram.user(444, "eve", "Eve")  # allowed, not an admin
MALLORY = FakeTelegram.user(666, "mallory", "Mallory")  # unknown
GROUP = FakeTelegram.group(-100700, "Team")


def telegram_channel(fake: FakeTelegram, home: Path) -> Any:
    from operator_use.channels.telegram.channel import TelegramChannel
    from operator_use.channels.telegram.config import TelegramConfig

    config = TelegramConfig(
        enabled=True,
        token=TOKEN,
        base_url=fake.base_url,
        base_file_url=fake.base_file_url,
        allow_from=["111", "222", "444"],
        admins=["111"],
        poll_timeout=5,
    )
    return TelegramChannel(config, workspace=home / "workspace")


def tg_texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m.text for m in fake.messages_in(chat_id)]


def tg_results(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [t for t in tg_texts(fake, chat_id) if t.startswith("result:")]


async def tg_request(fake: FakeTelegram, chat_id: int) -> BotMessage:
    await fake.wait_for(lambda: any(m.reply_markup for m in fake.messages_in(chat_id)))
    return next(m for m in fake.messages_in(chat_id) if m.reply_markup)


async def test_telegram_approve_button_runs_the_command(home: Path) -> None:
    require_module("telegram")
    async with FakeTelegram() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, telegram_channel(fake, home), server):
            fake.send_text(fake.private_chat(ALICE), ALICE, "build it")
            request = await tg_request(fake, 111)
            assert "run_shell" in request.text and COMMAND in request.text and "/approve " in request.text
            rid = request.text.split("/approve ")[1].split()[0]
            assert [(b["text"], b["callback_data"], b.get("style")) for b in request.buttons()] == [
                ("Approve", f"/approve {rid}", "primary"),
                ("Deny", f"/deny {rid}", "danger"),
            ]
            assert not proof(home).exists()
            shown = copy.deepcopy(request)  # as a client slow to see the edit still shows it
            query = fake.press(ALICE, request, f"/approve {rid}")
            await fake.wait_for(lambda: len(tg_results(fake, 111)) == 1)
            assert tg_results(fake, 111)[0].startswith("result: shell-ok")
            assert f"Approved {rid}: running run_shell." in tg_texts(fake, 111)
            assert proof(home).read_text() == "ran\n"
            await fake.wait_for(lambda: any(a["callback_query_id"] == query for a in fake.answered))
            # The decision closed the buttons: the keyboard is gone, the outcome is under the request.
            assert request.reply_markup is None and request.text.endswith("\n\nApproved by alice.")
            assert "run_shell" in request.text and COMMAND in request.text
            # allowed_updates asked for presses.
            allowed = fake.calls_to("getUpdates")[-1].params.get("allowed_updates")
            assert "callback_query" in str(allowed)
            # A press on the old keyboard finds nothing to approve, as a second typed /approve would.
            fake.press(ALICE, shown, f"/approve {rid}")
            await fake.wait_for(lambda: f"No pending approval {rid}." in tg_texts(fake, 111))
            assert len(fake.answered) == 2


async def test_telegram_deny_button_and_who_may_press(home: Path) -> None:
    require_module("telegram")
    async with FakeTelegram() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, telegram_channel(fake, home), server):
            fake.send_text(GROUP, BOB, "@operator_test_bot build it")
            request = await tg_request(fake, GROUP["id"])
            rid = request.text.split("/approve ")[1].split()[0]
            # An unknown sender's press: answered (the spinner stops), then nothing, and nothing runs.
            fake.press(MALLORY, request, f"/approve {rid}")
            # Eve is known but neither the requester nor an admin: refused as her typed /approve is.
            fake.press(EVE, request, f"/approve {rid}")
            await fake.wait_for(lambda: tg_texts(fake, GROUP["id"]).count(REFUSED) == 1)
            fake.send_text(GROUP, EVE, f"/approve {rid}")
            await fake.wait_for(lambda: tg_texts(fake, GROUP["id"]).count(REFUSED) == 2)
            assert tg_texts(fake, GROUP["id"]) == [request.text, REFUSED, REFUSED]  # nothing for Mallory
            assert not proof(home).exists() and len(server.requests) == 1
            fake.press(BOB, request, f"/deny {rid}")
            await fake.wait_for(lambda: len(tg_results(fake, GROUP["id"])) == 1)
            assert f"Denied {rid}: run_shell will not run." in tg_texts(fake, GROUP["id"])
            assert "the user denied run_shell" in tg_results(fake, GROUP["id"])[0]
            assert not proof(home).exists()
            assert len(fake.answered) == 3 and all(a.get("text") is None for a in fake.answered)
            assert request.reply_markup is None and request.text.endswith("\n\nDenied by bob.")
            # The refusal quotes the request the button was under, in the group.
            refusal = next(m for m in fake.messages_in(GROUP["id"]) if m.text == REFUSED)
            assert refusal.reply_to == request.message_id


async def test_telegram_a_command_over_64_bytes_goes_by_key(home: Path) -> None:
    require_module("telegram")
    published: list[IncomingMessage] = []
    arrived = asyncio.Event()

    async def publish(message: IncomingMessage) -> None:
        published.append(message)
        arrived.set()

    async with FakeTelegram() as fake:
        channel = telegram_channel(fake, home)
        fake.send_text(fake.private_chat(ALICE), ALICE, "hi")
        await channel.start(publish)
        try:
            await asyncio.wait_for(arrived.wait(), 20)
            long = "/approve " + "x" * 80
            here = Address(channel="telegram", chat_id="111")
            mid = await channel.send_buttons(here, "Pick", [Button(label="Long", command=long)])
            sent = next(m for m in fake.messages_in(111) if str(m.message_id) == mid)
            data = sent.buttons()[0]["callback_data"]
            assert len(data.encode()) <= 64 and data != long
            arrived.clear()
            query = fake.press(BOB, sent, data)
            await asyncio.wait_for(arrived.wait(), 20)
            pressed = published[-1]
            assert (pressed.text, pressed.user_id, pressed.user_name, pressed.chat_id) == (long, "222", "bob", "111")
            await fake.wait_for(lambda: any(a["callback_query_id"] == query for a in fake.answered))
        finally:
            await channel.stop()


# --- Discord -----------------------------------------------------------------------------------


def discord_channel(fake: Any, home: Path) -> Any:
    from operator_use.channels.discord.channel import DiscordChannel
    from operator_use.channels.discord.config import DiscordConfig

    from .fakes.discord_server import ROLE_ID

    config = DiscordConfig(
        enabled=True,
        token="discord-test-token",
        api_base_url=fake.api_base,
        allow_from=["11"],
        admins=["11"],
        allow_roles=[ROLE_ID],  # anyone holding the role is known, not an admin
    )
    return DiscordChannel(config, workspace=home / "workspace")


def dc_texts(fake: Any, channel_id: str) -> list[str]:
    return [m["content"] for m in fake.in_channel(channel_id)]


def dc_results(fake: Any, channel_id: str) -> list[str]:
    return [t for t in dc_texts(fake, channel_id) if t.startswith("result:")]


async def dc_request(fake: Any, channel_id: str) -> dict[str, Any]:
    await fake.wait_for(lambda: any(m.get("components") for m in fake.in_channel(channel_id)))
    return next(m for m in fake.in_channel(channel_id) if m.get("components"))


def dc_buttons(message: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(b["label"], b["custom_id"], b["style"]) for row in message["components"] for b in row["components"]]


async def test_discord_approve_button_runs_the_command(home: Path) -> None:
    require_module("discord")
    from .fakes.discord_server import ALICE as D_ALICE
    from .fakes.discord_server import DM_CHANNEL_ID, FakeDiscord

    async with FakeDiscord() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, discord_channel(fake, home), server):
            await fake.user_message(DM_CHANNEL_ID, "build it", author=D_ALICE)
            request = await dc_request(fake, DM_CHANNEL_ID)
            assert "run_shell" in request["content"] and COMMAND in request["content"]
            rid = request["content"].split("/approve ")[1].split()[0]
            # Primary (1) and danger (4), the commands as custom_ids.
            assert dc_buttons(request) == [("Approve", f"/approve {rid}", 1), ("Deny", f"/deny {rid}", 4)]
            shown = copy.deepcopy(request)  # as a client slow to see the edit still shows it
            interaction = await fake.press(request, f"/approve {rid}", author=D_ALICE)
            await fake.wait_for(lambda: len(dc_results(fake, DM_CHANNEL_ID)) == 1)
            assert dc_results(fake, DM_CHANNEL_ID)[0].startswith("result: shell-ok")
            assert f"Approved {rid}: running run_shell." in dc_texts(fake, DM_CHANNEL_ID)
            assert proof(home).read_text() == "ran\n"
            # Acknowledged as a deferred update (type 6): no "This interaction failed" for the presser.
            assert fake.callbacks[0] == (interaction, {"type": 6})
            # The decision closed the buttons: the components are gone, the outcome is under the request.
            assert request["components"] == [] and request["content"].endswith("\n\nApproved by alice.")
            # A press on the old message finds nothing to approve, as a second typed /approve would.
            await fake.press(shown, f"/approve {rid}", author=D_ALICE)
            await fake.wait_for(lambda: f"No pending approval {rid}." in dc_texts(fake, DM_CHANNEL_ID))
            assert len(fake.callbacks) == 2


async def test_discord_deny_button_and_who_may_press(home: Path) -> None:
    require_module("discord")
    from .fakes.discord_server import BOB as D_BOB
    from .fakes.discord_server import CAROL, CHANNEL_ID, GUILD_ID, ROLE_ID, FakeDiscord

    async with FakeDiscord() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, discord_channel(fake, home), server):
            # Carol is known through her role; she asks.
            await fake.user_message(
                CHANNEL_ID, "build it", author=CAROL, guild_id=GUILD_ID, roles=[ROLE_ID], mention_bot=True
            )
            request = await dc_request(fake, CHANNEL_ID)
            rid = request["content"].split("/approve ")[1].split()[0]
            # Bob without the role is unknown: acknowledged, then nothing, and nothing runs.
            await fake.press(request, f"/approve {rid}", author=D_BOB)
            # Bob with the role is known (his roles come with the press) but neither the requester nor an
            # admin: refused as his typed /approve is.
            await fake.press(request, f"/approve {rid}", author=D_BOB, roles=[ROLE_ID])
            await fake.wait_for(lambda: dc_texts(fake, CHANNEL_ID).count(REFUSED) == 1)
            await fake.user_message(
                CHANNEL_ID, f"/approve {rid}", author=D_BOB, guild_id=GUILD_ID, roles=[ROLE_ID], mention_bot=True
            )
            await fake.wait_for(lambda: dc_texts(fake, CHANNEL_ID).count(REFUSED) == 2)
            assert dc_texts(fake, CHANNEL_ID) == [request["content"], REFUSED, REFUSED]  # nothing for unknown Bob
            assert not proof(home).exists() and len(server.requests) == 1
            await fake.press(request, f"/deny {rid}", author=CAROL, roles=[ROLE_ID])
            await fake.wait_for(lambda: len(dc_results(fake, CHANNEL_ID)) == 1)
            assert f"Denied {rid}: run_shell will not run." in dc_texts(fake, CHANNEL_ID)
            assert "the user denied run_shell" in dc_results(fake, CHANNEL_ID)[0]
            assert not proof(home).exists()
            assert [body for _, body in fake.callbacks] == [{"type": 6}] * 3  # every press acknowledged
            assert request["components"] == [] and request["content"].endswith("\n\nDenied by carol.")
            refusal = next(m for m in fake.in_channel(CHANNEL_ID) if m["content"] == REFUSED)
            assert refusal["message_reference"]["message_id"] == request["id"]


# --- Slack -------------------------------------------------------------------------------------


def slack_channel(slack: Any, home: Path) -> Any:
    from operator_use.channels.slack.channel import SlackChannel
    from operator_use.channels.slack.config import SlackConfig

    config = SlackConfig(
        enabled=True,
        bot_token=slack.bot_token,
        app_token=slack.app_token,
        api_base_url=slack.api_base_url,
        allow_from=["U1", "U2", "U3"],
        admins=["U1"],
    )
    return SlackChannel(config, workspace=home / "workspace")


def sl_texts(slack: Any, channel: str, thread: str | None = None) -> list[str]:
    return [p.text for p in slack.replies(channel, thread)]


def sl_results(slack: Any, channel: str, thread: str | None = None) -> list[str]:
    return [t for t in sl_texts(slack, channel, thread) if t.startswith("result:")]


async def sl_request(slack: Any, channel: str, thread: str | None = None) -> Any:
    await slack.wait_for(lambda: any(p.blocks for p in slack.replies(channel, thread)))
    return next(p for p in slack.replies(channel, thread) if p.blocks)


async def test_slack_approve_button_runs_the_command(home: Path) -> None:
    require_module("slack_bolt")
    from .fakes.slack_server import FakeSlackServer

    async with FakeSlackServer() as slack, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, slack_channel(slack, home), server):
            await slack.send_event(slack.message("build it", user="U1", channel="D1"))
            request = await sl_request(slack, "D1")
            shown = COMMAND.replace("&", "&amp;").replace(">", "&gt;")  # as mrkdwn escapes it
            assert "run_shell" in request.text and shown in request.text
            rid = request.text.split("/approve ")[1].split()[0]
            section, actions = request.blocks
            assert section == {"type": "section", "text": {"type": "mrkdwn", "text": request.text}}
            assert [(b["text"]["text"], b["value"], b.get("style")) for b in actions["elements"]] == [
                ("Approve", f"/approve {rid}", "primary"),
                ("Deny", f"/deny {rid}", "danger"),
            ]
            shown = copy.deepcopy(request)  # as a client slow to see the edit still shows it
            envelope = await slack.press(request, actions["elements"][0]["action_id"], user="U1")
            await slack.wait_for(lambda: len(sl_results(slack, "D1")) == 1)
            assert sl_results(slack, "D1")[0].startswith("result: shell-ok")
            assert f"Approved {rid}: running run_shell." in sl_texts(slack, "D1")
            assert proof(home).read_text() == "ran\n"
            await slack.wait_for(lambda: slack.acked(envelope))  # the socket-mode ack
            # The decision closed the buttons: the actions block is gone, the outcome is under the request.
            assert request.final_text.endswith("\n\nApproved by U1.")
            assert request.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": request.final_text}}]
            # A press on the old message finds nothing to approve, as a second typed /approve would.
            again = await slack.press(shown, actions["elements"][0]["action_id"], user="U1")
            await slack.wait_for(lambda: f"No pending approval {rid}." in sl_texts(slack, "D1"))
            await slack.wait_for(lambda: slack.acked(again))


async def test_slack_deny_button_and_who_may_press(home: Path) -> None:
    require_module("slack_bolt")
    from .fakes.slack_server import FakeSlackServer

    async with FakeSlackServer() as slack, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, slack_channel(slack, home), server):
            asked = slack.message("<@UBOT> build it", user="U2", channel="C1")
            await slack.send_event(asked)
            root = asked["ts"]  # answered in the mention's thread
            request = await sl_request(slack, "C1", root)
            rid = request.text.split("/approve ")[1].split()[0]
            approve, deny = (b["action_id"] for b in request.buttons())
            # U9 is unknown: acknowledged, then nothing, and nothing runs.
            unknown = await slack.press(request, approve, user="U9")
            # U3 is known but neither the requester nor an admin: refused as U3's typed /approve is.
            await slack.press(request, approve, user="U3")
            await slack.wait_for(lambda: sl_texts(slack, "C1", root).count(REFUSED) == 1)
            await slack.send_event(slack.message(f"/approve {rid}", user="U3", channel="C1", thread_ts=root))
            await slack.wait_for(lambda: sl_texts(slack, "C1", root).count(REFUSED) == 2)
            assert sl_texts(slack, "C1", root) == [request.text, REFUSED, REFUSED]  # nothing for U9
            assert not proof(home).exists() and len(server.requests) == 1
            last = await slack.press(request, deny, user="U2")
            await slack.wait_for(lambda: len(sl_results(slack, "C1", root)) == 1)
            assert f"Denied {rid}: run_shell will not run." in sl_texts(slack, "C1", root)
            assert "the user denied run_shell" in sl_results(slack, "C1", root)[0]
            assert not proof(home).exists()
            await slack.wait_for(lambda: slack.acked(unknown) and slack.acked(last))
            presses = [e for e in slack.envelopes if e.body["type"] == "interactive"]
            assert len(presses) == 3 and all(e.acked for e in presses)
            assert request.final_text.endswith("\n\nDenied by U2.") and not request.buttons()


def long_command() -> str:
    """3,300 characters on 40 lines, with what mrkdwn would format (`*`, `_`, `~`) and escapes (`&`, `>`)."""
    lines = []
    for i in range(40):
        line = (
            f"echo *step_{i:02d}* _under_{i:02d}_ ~tilde_{i:02d}~"
            + (" && true" if i % 5 == 0 else "")
            + " > /dev/null #"
        )
        lines.append(line.ljust(82 if i < 39 else 63, "x"))
    command = "\n".join(lines)
    assert len(command) == 3300
    return command


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


def assert_command_fenced(sections: list[str], command: str) -> None:
    """Each section closes its own code blocks, the command is whole inside them and nowhere outside them."""
    from operator_use.gateway.splitting import find_fences

    assert len(sections) >= 2  # the request is longer than one section
    bodies, outside = [], []
    for text in sections:
        fences = find_fences(text)
        assert fences and all(f.closed for f in fences), text
        start = 0
        for f in fences:
            outside.append(text[start : f.start])
            bodies.append(text[f.body : f.close_start])
            start = f.end
        outside.append(text[start:])
    shown = command.replace("&", "&amp;").replace(">", "&gt;")  # as mrkdwn escapes it
    assert "".join(bodies) == shown + "\n"
    assert not any(mark in part for part in outside for mark in ("step_", "under_", "tilde_", "/dev/null"))


async def test_slack_long_request_keeps_the_command_in_a_code_block_in_every_section(home: Path) -> None:
    require_module("slack_bolt")
    from .fakes.llm_server import FakeRequest, Reply
    from .fakes.slack_server import FakeSlackServer

    command = long_command()

    def responder(request: FakeRequest) -> Reply:
        if request.last_tool_result() is not None:
            return Reply(text="result: done")
        return Reply(tool_calls=[{"name": "run_shell", "arguments": {"command": command}}])

    async with FakeSlackServer() as slack, FakeLLMServer(responder=responder) as server:
        async with shell_app(home, slack_channel(slack, home), server):
            await slack.send_event(slack.message("build it", user="U1", channel="D1"))
            request = await sl_request(slack, "D1")
            assert_command_fenced(section_texts(request.blocks), command)
            deny = next(b["action_id"] for b in request.buttons() if b["value"].startswith("/deny "))
            await slack.press(request, deny, user="U1")
            await slack.wait_for(lambda: request.final_text.endswith("\n\nDenied by U1."))
            # Closed: the sections alone, the command still whole inside code blocks, the outcome below.
            assert not request.buttons()
            closed = section_texts(request.blocks)
            assert_command_fenced(closed, command)
            assert closed[-1].endswith("Denied by U1.")


def test_slack_sections_are_never_cut_inside_an_escape_or_a_link() -> None:
    import re

    from operator_use.channels.slack.sections import sections
    from operator_use.gateway.splitting import find_fences

    # One code line longer than a section: it is hard-cut, but never inside "&amp;" / "&lt;".
    body = "&amp;&lt;" * 400
    pieces = sections(f"```\n{body}\n```")
    assert len(pieces) >= 2 and all(len(p) <= 3000 for p in pieces)
    bodies = []
    for piece in pieces:
        (fence,) = find_fences(piece)
        assert fence.closed
        bodies.append(piece[fence.body : fence.close_start].rstrip("\n"))
        assert re.fullmatch(r"(?:&amp;|&lt;)+", bodies[-1]), bodies[-1][-12:]
    assert "".join(bodies) == body
    # A cut that would fall inside a link's label (at a space) goes before the link.
    link = "<https://example.com/page|a label with many words in it>"
    text = "word " * 595 + link + " end"
    pieces = sections(text)
    assert len(pieces) == 2 and link in pieces[1] and all(p.count("<") == p.count(">") for p in pieces)


async def test_telegram_expiry_closes_the_buttons(home: Path) -> None:
    require_module("telegram")
    async with FakeTelegram() as fake, FakeLLMServer(responder=shell_responder) as server:
        channel = telegram_channel(fake, home)
        async with build_app(home, channel, llm(server), agent={"tools": ["run_shell"], "approvals": {"timeout": 0.3}}):
            fake.send_text(fake.private_chat(ALICE), ALICE, "build it")
            request = await tg_request(fake, 111)
            rid = request.text.split("/approve ")[1].split()[0]
            shown = copy.deepcopy(request)
            await fake.wait_for(lambda: len(tg_results(fake, 111)) == 1)
            assert "not approved in time" in tg_results(fake, 111)[0]
            assert request.reply_markup is None and request.text.endswith("\n\nExpired: run_shell was not run.")
            fake.press(ALICE, shown, f"/approve {rid}")
            await fake.wait_for(lambda: f"No pending approval {rid}." in tg_texts(fake, 111))
            assert not proof(home).exists()


async def test_telegram_restart_while_waiting_closes_the_buttons_as_stop_does(home: Path) -> None:
    require_module("telegram")
    async with FakeTelegram() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, telegram_channel(fake, home), server) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "build it")
            request = await tg_request(fake, 111)
            fake.send_text(fake.private_chat(ALICE), ALICE, "/restart")
            # Closed before the agent goes: the restart waits for it.
            await fake.wait_for(lambda: request.reply_markup is None and "Restarting..." in tg_texts(fake, 111))
            assert request.text.endswith("\n\nCancelled: run_shell was not run.")
            assert not app.protection.gate.pending
            await asyncio.wait_for(app.wait_closed(), 30)
            assert app.restart_requested
    assert not proof(home).exists()


async def test_telegram_stop_while_waiting_closes_the_buttons(home: Path) -> None:
    require_module("telegram")
    async with FakeTelegram() as fake, FakeLLMServer(responder=shell_responder) as server:
        async with shell_app(home, telegram_channel(fake, home), server) as app:
            fake.send_text(fake.private_chat(ALICE), ALICE, "build it")
            request = await tg_request(fake, 111)
            rid = request.text.split("/approve ")[1].split()[0]
            shown = copy.deepcopy(request)
            fake.send_text(fake.private_chat(ALICE), ALICE, "/stop")
            await fake.wait_for(lambda: request.reply_markup is None and "Stopped." in tg_texts(fake, 111))
            assert request.text.endswith("\n\nCancelled: run_shell was not run.")
            assert not app.protection.gate.pending
            fake.press(ALICE, shown, f"/approve {rid}")
            await fake.wait_for(lambda: f"No pending approval {rid}." in tg_texts(fake, 111))
            assert not proof(home).exists()
