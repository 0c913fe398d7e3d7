"""`operator-use chat` in a real terminal (tmux), against the fake LLM server: line editing, history,
bracketed paste, markdown rendered once a reply is final, and log records printed above the prompt while
a line is half typed."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from .fakes.llm_server import ErrorTurn, FakeLLMServer, FakeRequest, Reply, TurnLike
from .support.deps import require_binary
from .support.tmux import Tmux

ROOT = Path(__file__).resolve().parent.parent

INJECTION = "\x1b]2;PWNED\x07 \x1b[2J"
MARKDOWN = "Here is **bold** text:\n\n- first item\n- second item\n\n```python\nprint('hi')\n```\n\nThe end."


class LLMThread:
    """The fake LLM server on an event loop of its own thread, so the test can drive tmux (which blocks)
    while the server answers; `release()` opens the gate a reply waits on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-llm", daemon=True)
        self.gate = asyncio.Event()
        self.server = FakeLLMServer(responder=self._respond)

    def _respond(self, request: FakeRequest) -> TurnLike | asyncio.Future[TurnLike]:
        text = request.last_user_text()
        if text == "markdown please":
            # The first chunk streams, the rest waits for the gate: the test sees the reply being written.
            return Reply(text=MARKDOWN, chunk_size=20, gate=self.gate)
        if text == "fail please":
            return asyncio.ensure_future(self._fail_later())
        if text == "escape please":  # an error body that would retitle the window and clear the screen
            return ErrorTurn(status=400, message=INJECTION)
        return Reply(text=f"You said: {text}", chunk_size=3)

    async def _fail_later(self) -> TurnLike:
        await self.gate.wait()
        return ErrorTurn(status=400, message="the fake model refuses")

    def __enter__(self) -> LLMThread:
        self.thread.start()
        self._call(self.server.start()).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # a reply still waiting on the gate would hold the server's shutdown
        self._call(self.server.stop()).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def _call(self, coro: object) -> Future[object]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def user_texts(self) -> list[str]:
        return [FakeRequest("openai", "", body, {}).last_user_text() for body in list(self.server.requests)]

    def wait_for_requests(self, count: int, timeout: float = 30) -> list[str]:
        self._call(asyncio.wait_for(self.server.wait_for_requests(count), timeout)).result(timeout + 5)
        return self.user_texts()


@pytest.fixture
def llm() -> Iterator[LLMThread]:
    with LLMThread() as server:
        yield server


@pytest.fixture
def terminal(home: Path, llm: LLMThread) -> Iterator[Tmux]:
    """`operator-use chat` in a fresh 100x40 tmux window, up to its first prompt."""
    require_binary("tmux")
    tmux = Tmux(f"opuse-{uuid.uuid4().hex[:8]}")
    env = (
        f"env -i PATH={os.environ['PATH']} HOME={home} OPERATOR_HOME={home} LANG=C.UTF-8 TERM=xterm "
        f"OPERATOR_LLM__PROVIDER=openai OPERATOR_LLM__MODEL=fake-model "
        f"OPERATOR_LLM__BASE_URL={llm.server.openai_base_url} OPENAI_API_KEY=sk-test-key"
    )
    command = f"cd {ROOT} && {env} {sys.executable} -m operator_use chat; echo EXIT=$?; sleep 60"
    tmux.run("new-session", "-d", "-s", tmux.session, "-x", "100", "-y", "40", command)
    try:
        tmux.wait_for(r"^you>$")
        yield tmux
        tmux.keys("C-d")
        tmux.wait_for(r"EXIT=0")
    finally:
        tmux.kill()


def last_line(screen: str) -> str:
    return [line for line in screen.splitlines() if line.strip()][-1]


def wait_prompt(terminal: Tmux, typed: str = "") -> str:
    """Until the bottom line is the prompt holding `typed` (tmux drops the blank after an empty prompt)."""
    want = f"you> {typed}".rstrip()
    until(lambda: last_line(terminal.screen()) == want, f"the prompt shows {want!r}")
    return terminal.screen()


def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_line_editing_history_ctrl_c_and_a_bracketed_paste(home: Path, llm: LLMThread, terminal: Tmux) -> None:
    # Type with a typo, go back and fix it: the model gets the edited line.
    terminal.write("hllo world")
    terminal.keys("Home", "Right")
    terminal.write("e")
    wait_prompt(terminal, "hello world")
    terminal.keys("End")
    terminal.write("!")
    terminal.keys("Enter")
    assert llm.wait_for_requests(1)[-1] == "hello world!"
    terminal.wait_for(r"^agent> You said: hello world!$")

    # Up brings the last message back; it is sent again as it was.
    terminal.keys("Up")
    wait_prompt(terminal, "hello world!")
    terminal.keys("Enter")
    assert llm.wait_for_requests(2)[-1] == "hello world!"

    # Ctrl-C clears a half-typed line; nothing of it is sent.
    terminal.wait_for(r"(?s)You said: hello world!.*You said: hello world!.*^you>$")
    terminal.write("never mind this")
    wait_prompt(terminal, "never mind this")
    terminal.keys("C-c")
    wait_prompt(terminal)
    terminal.type("ok")
    assert llm.wait_for_requests(3)[-1] == "ok"
    terminal.wait_for(r"^agent> You said: ok$")

    # A multi-line paste is one message, newlines and all; Enter sends it.
    terminal.paste("line one\nline two\nline three")
    terminal.wait_for(r"^you> line one\n\s+line two\n\s+line three$")
    assert len(llm.user_texts()) == 3  # the paste's newlines did not send anything
    terminal.keys("Enter")
    assert llm.wait_for_requests(4)[-1] == "line one\nline two\nline three"
    # The reply keeps the line breaks (a newline is a break, as in the web chat).
    terminal.wait_for(r"^agent> You said: line one\n\s+line two\n\s+line three$")

    # Alt-Enter starts a new line in a typed message.
    terminal.write("first")
    terminal.keys("M-Enter")
    terminal.write("second")
    terminal.keys("Enter")
    assert llm.wait_for_requests(5)[-1] == "first\nsecond"

    history = home / "terminal_history"
    until(lambda: "+second" in history.read_text(), "the history file has the last message")
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "never mind this" not in history.read_text()


def test_a_markdown_reply_is_rendered_once_final(llm: LLMThread, terminal: Tmux) -> None:
    terminal.type("markdown please")
    # While it is being written, the reply shows as it comes, plain, just above the prompt.
    writing = terminal.wait_for(r"^agent> Here is \*\*bold\*\* tex\n^you>$")
    assert writing.count("Here is") == 1
    llm.release()
    screen = terminal.wait_for(r"The end\.\s*\n\s*\n^you>$")
    assert "agent> Here is bold text:" in screen
    assert "• first item" in screen and "• second item" in screen
    assert "print('hi')" in screen
    assert "**" not in screen and "```" not in screen
    assert screen.count("Here is") == 1  # the plain version gave way to the rendered one


def test_a_log_record_while_typing_shows_above_the_prompt_and_the_line_survives(llm: LLMThread, terminal: Tmux) -> None:
    terminal.type("fail please")
    llm.wait_for_requests(1)
    terminal.write("half typed")
    wait_prompt(terminal, "half typed")
    llm.release()  # the model now fails: the orchestrator logs a WARNING on the console
    screen = terminal.wait_for(r"WARNING operator_use\.orchestrator\.orchestrator: LLM failed in cli:terminal")
    screen = terminal.wait_for(r"^agent> .*(?:\n.*)*\n^you> half typed$")
    lines = screen.splitlines()
    warning = next(i for i, line in enumerate(lines) if "LLM failed in cli:terminal" in line)
    prompt = max(i for i, line in enumerate(lines) if line.startswith("you> "))
    assert warning < prompt and lines[prompt] == "you> half typed" and last_line(screen) == "you> half typed"
    assert sum("half typed" in line for line in lines) == 1  # never drawn into the log line
    terminal.keys("Enter")
    assert llm.wait_for_requests(2)[-1] == "half typed"


def test_escape_sequences_in_a_logged_error_are_shown_not_obeyed(home: Path, llm: LLMThread, terminal: Tmux) -> None:
    title = terminal.run("display-message", "-p", "-t", terminal.session, "#{pane_title}")
    terminal.type("escape please")
    screen = terminal.wait_for(r"WARNING operator_use\.orchestrator\.orchestrator: LLM failed in cli:terminal")
    terminal.wait_for(r"^agent> ")  # the error reply, after the log record
    wait_prompt(terminal)
    # Not obeyed: the window keeps its title and the screen was not cleared (the welcome is still on it) ...
    assert terminal.run("display-message", "-p", "-t", terminal.session, "#{pane_title}") == title
    assert "PWNED" not in title
    on_screen = terminal.run("capture-pane", "-t", terminal.session, "-p")  # the visible rows only
    assert "operator-use: Enter sends" in on_screen and "you> escape please" in on_screen
    # ... but shown, in caret notation.
    assert "^[]2;PWNED^G ^[[2J" in screen
    # The log file holds it as text too, without an ESC byte.
    log = (home / "logs" / "operator-use.log").read_bytes()
    assert b"\x1b" not in log and b"\\x1b]2;PWNED\\x07 \\x1b[2J" in log


def test_a_sigint_is_ctrl_c_at_the_prompt_and_only_sigterm_stops(home: Path, llm: LLMThread, terminal: Tmux) -> None:
    # prompt_toolkit leaves raw mode while it prints above the prompt: a Ctrl-C typed then is a real SIGINT.
    pid = int((home / ".lock").read_text().split()[0])
    # Idle, a half-typed line: cleared, as Ctrl-C does.
    terminal.write("never mind")
    wait_prompt(terminal, "never mind")
    os.kill(pid, signal.SIGINT)
    wait_prompt(terminal)
    # Idle, an empty line: /stop, with nothing to stop.
    os.kill(pid, signal.SIGINT)
    terminal.wait_for(r"^agent> Nothing to stop\.$")
    # While a reply is being written: the reply stops, the agent does not.
    terminal.type("markdown please")
    terminal.wait_for(r"^agent> Here is \*\*bold\*\* tex\n^you>$")
    os.kill(pid, signal.SIGINT)
    terminal.wait_for(r"^agent> Stopped\.$")
    terminal.type("still there?")
    terminal.wait_for(r"^agent> You said: still there\?$")
    # While the final reply is printed above the prompt: the half-typed line is cleared, nothing else.
    terminal.type("markdown please")
    terminal.wait_for(r"^agent> Here is \*\*bold\*\* tex\n^you>$")
    terminal.write("draft")
    wait_prompt(terminal, "draft")
    llm.release()
    os.kill(pid, signal.SIGINT)
    terminal.wait_for(r"The end\.\s*\n\s*\n^you>$")
    terminal.type("and now?")
    terminal.wait_for(r"^agent> You said: and now\?$")
    assert "draft" not in llm.user_texts()
    # SIGTERM still stops it, cleanly.
    os.kill(pid, signal.SIGTERM)
    terminal.wait_for(r"^EXIT=0$")


async def test_the_history_file_is_made_private_and_keeps_the_last_entries(tmp_path: Path) -> None:
    from operator_use.channels.cli.history import TerminalHistory

    path = tmp_path / "terminal_history"
    entries = [f"message {i}" if i % 7 else f"message {i}\nsecond line" for i in range(1500)]
    path.write_text(
        "".join(f"\n# 2026-01-01 00:00:{i % 60:02}\n+" + e.replace("\n", "\n+") + "\n" for i, e in enumerate(entries))
    )
    path.chmod(0o644)  # as an older version left it

    history = TerminalHistory(path, max_entries=1000)
    loaded = [text async for text in history.load()]
    assert loaded == list(reversed(entries[-1000:]))  # newest first, as prompt_toolkit wants them
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    history.close()
    # The file itself now holds only those, timestamps kept, and reads back the same.
    content = path.read_text()
    assert content.count("\n# 2026-01-01") == 1000 and "+message 499\n" not in content and "+message 500\n" in content
    again = TerminalHistory(path, max_entries=1000)
    assert [text async for text in again.load()] == loaded
    again.append_string("one more")
    again.close()
    await asyncio.to_thread(until, lambda: "+one more\n" in path.read_text(), "the new message is appended")
    assert not [p for p in tmp_path.iterdir() if p.name != "terminal_history"]  # no temporary file left

    # A short file is only made private.
    small = tmp_path / "small"
    small.write_text("\n# 2026-01-01\n+hello\n")
    small.chmod(0o644)
    short = TerminalHistory(small)
    assert [text async for text in short.load()] == ["hello"]
    short.close()
    assert stat.S_IMODE(small.stat().st_mode) == 0o600 and small.read_text() == "\n# 2026-01-01\n+hello\n"
