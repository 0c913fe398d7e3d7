"""send_file reads workspace files too: the path traversal suite's cases run through it, 0 escapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from operator_use.session.store import SessionStore
from operator_use.tools.messaging import Messenger

from .support.pipeline import TappedBus
from .test_tools_paths import CASES, SECRET, Case, layout, make_ctx  # noqa: F401  (layout is a fixture)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_send_file_never_sends_outside_files(layout, case: Case, tmp_path: Path) -> None:  # noqa: F811
    tmp, ws, out = layout
    if case.setup:
        case.setup(tmp, ws, out)
    path = case.path(tmp, ws, out) if callable(case.path) else case.path
    bus = TappedBus()
    tool = {t.name: t for t in Messenger(bus, {}, SessionStore(tmp_path / "sessions")).tools()}["send_file"]
    result = await tool.run(make_ctx(ws), {"path": path})
    sent = bus.outgoing_log  # what the tool published, if anything
    assert all(SECRET.encode() not in p.data for m in sent for p in m.parts if p.type == "file")
    assert b"root:" not in b"".join(p.data for m in sent for p in m.parts if p.type == "file")
    if case.refused:
        assert result.is_error and not sent, result
