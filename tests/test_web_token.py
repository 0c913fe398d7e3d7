"""The web chat's stored token file when something other than a regular file stands in its place."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from operator_use.channels.web.token import TOKEN_FILE, stored_token


def test_a_fifo_in_place_of_the_token_file_is_replaced_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    os.mkfifo(path, 0o600)
    done = threading.Event()
    result: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            result.append(stored_token(path))
        except BaseException as e:  # noqa: BLE001 — handed to the test's own thread
            errors.append(e)
        finally:
            done.set()

    # A daemon thread: if the open blocks on the FIFO, the test fails instead of hanging.
    threading.Thread(target=read, daemon=True).start()
    if not done.wait(10):
        # Let the blocked reader go (a writer opening the FIFO ends its wait), then fail.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        done.wait(10)
        raise AssertionError("stored_token blocked on a FIFO in place of the token file")
    assert not errors, errors
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert path.read_text().strip() == result[0] and len(result[0]) >= 32
    assert stored_token(path) == result[0]  # and kept from then on
    assert [p.name for p in tmp_path.iterdir()] == [TOKEN_FILE]


def test_a_symlink_in_place_of_the_token_file_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("A" * 40 + "\n")
    path = tmp_path / TOKEN_FILE
    path.symlink_to(target)
    token = stored_token(path)
    assert token != "A" * 40 and not path.is_symlink() and path.read_text().strip() == token
    assert target.read_text() == "A" * 40 + "\n"  # the file it pointed to is untouched
