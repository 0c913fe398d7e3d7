"""A real terminal for CLI tests: a tmux session, driven with keys and pastes, read from its pane."""

from __future__ import annotations

import re
import subprocess
import time


class Tmux:
    def __init__(self, session: str) -> None:
        self.session = session

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout

    def type(self, text: str) -> None:
        self.write(text)
        self.keys("Enter")

    def write(self, text: str) -> None:
        """Type `text` literally, without Enter."""
        self.run("send-keys", "-t", self.session, "-l", text)

    def keys(self, *names: str) -> None:
        """Press keys by tmux name: Enter, Left, Up, Home, C-c, M-Enter..."""
        self.run("send-keys", "-t", self.session, *names)

    def paste(self, text: str) -> None:
        """Paste `text` as a terminal does: bracketed (`-p`) when the application asked for it."""
        buffer = f"{self.session}-paste"
        subprocess.run(["tmux", "load-buffer", "-b", buffer, "-"], input=text, text=True, check=True, timeout=30)
        self.run("paste-buffer", "-p", "-d", "-b", buffer, "-t", self.session)

    def screen(self) -> str:
        return self.run("capture-pane", "-t", self.session, "-p", "-S", "-200")

    def wait_for(self, pattern: str, timeout: float = 30, *, times: int = 1) -> str:
        """Poll the screen until `pattern` shows (`times` times: a prompt asked again looks like the first):
        waiting on what the user would see, not on a timer."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        while True:
            screen = self.screen()
            if len(regex.findall(screen)) >= times:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared {times} time(s); screen:\n{screen}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)
