"""ask_user, send_message and send_file end to end through the test channel."""

from __future__ import annotations

from pathlib import Path

from operator_use.messages import Address, FilePart, HumanMessage, Part
from operator_use.providers.llm.openai import OpenAILLM

from .fakes.llm_server import FakeLLMServer, FakeRequest, Reply
from .support.apps import build_app
from .support.chat import ChatChannel


class FileChannel(ChatChannel):
    """The test channel, also recording non-text parts (files)."""

    def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        self.parts: list[tuple[Address, list[Part]]] = []

    async def send_parts(self, address: Address, parts: list[Part], *, reply_to: str | None = None) -> None:
        self.parts.append((address, parts))
        await self._notify()


CALLS = {
    "ask me": ("ask_user", {"question": "Which colour do you want?"}),
    "send file": ("send_file", {"path": "report.txt", "caption": "Here is the report"}),
    "send secret file": ("send_file", {"path": "../outside.txt"}),
    "post here": ("send_message", {"text": "A separate note."}),
    "post to c2": ("send_message", {"text": "Hello c2, from c1.", "to": "test:c2"}),
    "post to stranger": ("send_message", {"text": "spam", "to": "test:nobody"}),
}


def responder(request: FakeRequest) -> Reply:
    result = request.last_tool_result()
    if result is not None:
        return Reply(text=f"result: {result}")
    text = request.last_user_text()
    if text in CALLS:
        name, args = CALLS[text]
        return Reply(tool_calls=[{"name": name, "arguments": args}])
    return Reply(text=f"You said: {text}")


def app_for(home: Path, channel: ChatChannel, server: FakeLLMServer, **tools):  # type: ignore[no-untyped-def]
    llm = OpenAILLM("fake-gpt", "test-key", base_url=server.openai_base_url)
    return build_app(home, channel, llm, agent={"tools": ["ask_user", "send_*"]}, tools=tools)


def results(channel: ChatChannel, chat: str = "c1") -> list[str]:
    return [p.text for p in channel.finalized(chat) if p.text.startswith("result:")]


async def test_ask_user_takes_the_next_message_as_the_answer(home: Path) -> None:
    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()
        async with app_for(home, channel, server) as app:
            await channel.say("ask me")
            await channel.wait_for(lambda: "Which colour do you want?" in channel.texts())
            # Commands still work while the question waits, and are not taken as the answer.
            await channel.say("/status")
            await channel.wait_for(lambda: any(t.startswith("Model:") for t in channel.texts()))
            # Someone else in the chat does not answer for the user (their message waits its turn).
            await channel.say("red!", user="bob")
            await channel.say("blue, please")
            await channel.wait_for(lambda: len(results(channel)) == 1)
            assert results(channel) == ["result: The user answered: blue, please"]
            await channel.wait_for(lambda: "You said: red!" in channel.texts())
            await app.orchestrator.lanes.idle()  # bob's turn has saved its history
            # "blue, please" was an answer, not a turn: the model was called for "ask me" (twice: the
            # question, then the answer) and for bob's message, never for the answer itself.
            humans = [m.content for m in (await app.sessions.load("test:c1")).messages if isinstance(m, HumanMessage)]
            assert humans == ["ask me", "red!"]
            assert len(server.requests) == 3


async def test_ask_user_times_out(home: Path) -> None:
    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()
        async with app_for(home, channel, server, ask_timeout=0.3):
            await channel.say("ask me")
            await channel.wait_for(lambda: len(results(channel)) == 1)
            assert results(channel) == ["result: The user did not answer within 0.3 seconds."]
            await channel.say("late answer")
            await channel.wait_for(lambda: "You said: late answer" in channel.texts())


async def test_send_message_and_file_to_this_chat(home: Path) -> None:
    (home / "workspace").mkdir(parents=True, exist_ok=True)
    (home / "workspace" / "report.txt").write_text("all good\n")
    (home / "outside.txt").write_text("not for chat\n")
    async with FakeLLMServer(responder=responder) as server:
        channel = FileChannel()
        async with app_for(home, channel, server):
            await channel.say("post here")
            await channel.wait_for(lambda: len(results(channel)) == 1)
            assert "A separate note." in channel.texts() and results(channel) == ["result: Sent."]
            await channel.say("send file")
            await channel.wait_for(lambda: len(results(channel)) == 2)
            assert results(channel)[1] == "result: Sent report.txt (9 bytes)."
            assert "Here is the report" in channel.texts()
            ((address, parts),) = channel.parts
            assert address.key == "test:c1"
            assert parts == [FilePart(name="report.txt", mime="text/plain", data=b"all good\n")]
            await channel.say("send secret file")
            await channel.wait_for(lambda: len(results(channel)) == 3)
            assert "resolves outside the workspace" in results(channel)[2]
            assert len(channel.parts) == 1


async def test_only_admins_post_to_another_known_chat(home: Path) -> None:
    async with FakeLLMServer(responder=responder) as server:
        channel = ChatChannel()  # alice is an admin, bob is not
        async with app_for(home, channel, server):
            await channel.say("post to c2", user="bob")
            await channel.wait_for(lambda: len(results(channel)) == 1)
            assert "only admins may send to another chat" in results(channel)[0]
            await channel.say("post to c2", user="alice")
            await channel.wait_for(lambda: len(results(channel)) == 2)
            assert "is not a chat this agent knows" in results(channel)[1]  # c2 has never talked to the agent
            await channel.say("hello", chat="c2", user="bob")
            await channel.wait_for(lambda: "You said: hello" in channel.texts("c2"))
            await channel.say("post to c2", user="alice")
            await channel.wait_for(lambda: len(results(channel)) == 3)
            assert results(channel)[2] == "result: Sent to test:c2."
            assert "Hello c2, from c1." in channel.texts("c2")
            await channel.say("post to stranger", user="alice")
            await channel.wait_for(lambda: len(results(channel)) == 4)
            assert "not a chat this agent knows" in results(channel)[3]
            assert channel.texts("nobody") == []
