"""The benchmarks keep running: each ends with one JSON line carrying its documented keys.

No figure is asserted here (performance is read from the benchmarks' output, not from tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .support.deps import require_binary, require_module

ROOT = Path(__file__).resolve().parent.parent


def last_json(script: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_pipeline_bench_reports_its_figures() -> None:
    figures = last_json("pipeline.py")
    assert set(figures) == {
        "overhead_p50_ms",
        "overhead_p99_ms",
        "msgs_per_s_c1",
        "msgs_per_s_c10",
        "msgs_per_s_c100",
        "framework_cpu_ms_per_msg",
    }
    assert all(isinstance(v, (int, float)) and v > 0 for v in figures.values())


def test_streaming_bench_reports_every_profile() -> None:
    figures = last_json("streaming.py")
    assert set(figures) == {"telegram", "discord", "slack", "web", "terminal", "twitch", "mqtt"}
    for profile in figures.values():
        assert set(profile) == {"calls", "final_delay_ms", "edit_interval_ms"}
        assert profile["calls"] > 0, "every profile delivered the answer"


def test_strangers_bench_reports_its_figures() -> None:
    figures = last_json("strangers.py")
    assert set(figures) == {
        "allowed_reply_p50_ms",
        "allowed_reply_p99_ms",
        "stranger_msgs",
        "store_writes",
        "stranger_replies",
        "strangers_ignored",
    }
    assert figures["stranger_msgs"] == 2000 and figures["allowed_reply_p50_ms"] > 0
    # Counts, not timings: the flood answered by the limits, the store written only for the codes.
    assert figures["stranger_replies"] + figures["strangers_ignored"] <= 2000 and figures["store_writes"] <= 3


@pytest.mark.slow
def test_web_render_bench_reports_its_figures() -> None:
    require_binary("chromium")
    require_module("playwright")
    figures = last_json("web_render.py")
    assert set(figures) == {"render_p50_ms", "render_p95_ms", "render_max_ms", "reply_kb"}
    assert figures["reply_kb"] == 100
    assert 0 <= figures["render_p50_ms"] <= figures["render_p95_ms"] <= figures["render_max_ms"]
