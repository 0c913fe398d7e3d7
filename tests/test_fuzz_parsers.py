"""Every parser of outside input, fed thousands of random and hostile inputs: the MQTT request parser, the
web chat's frame parser, the configuration file and the OPERATOR_* variables. Each input must give a result
or the parser's own clear error, never another exception.

Two generators per parser: Hypothesis builds structured inputs (requests, frames, YAML and variables shaped
like the real ones, with hostile values), derandomized and without its example database; a seeded mutation
fuzzer corrupts good and hostile seeds thousands of times more, cheaply. Both give the same inputs every run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_use.channels.mqtt.payloads import BadRequest, check_reply_topic, event, parse_request
from operator_use.channels.web.frames import AudioFrame, BadFrame, TextFrame, frame_size, parse_frame
from operator_use.config import ConfigError, load_config
from operator_use.safe_yaml import MAX_VALUES

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

# Text as JSON can carry it: any character, lone surrogates included (JSON writes them as "\ud800" escapes).
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
ANY_TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=6,
)


def _nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


# What the C JSON decoder and int() choke on, spliced into otherwise good requests: nesting past the
# recursion limit (1000) and integers past int()'s 4300 digits, around those limits.
HOSTILE_JSON = st.one_of(
    st.integers(1, 3000).map(lambda d: '{"text": "hi", "x": ' + _nested(d) + "}"),
    st.integers(1, 3000).map(lambda d: '{"text": "hi", "x": ' + '{"a": ' * d + "1" + "}" * d + "}"),
    st.integers(1, 3000).map(lambda d: "{" * d),
    st.integers(4000, 5000).map(lambda n: '{"text": "hi", "id": ' + "9" * n + "}"),
    st.integers(4000, 5000).map(lambda n: '{"text": "hi", "n": -' + "1" * n + "}"),
    st.tuples(st.sampled_from(["text", "id", "reply_to", "mime", "data"]), SURROGATES, ANY_TEXT).map(
        lambda t: json.dumps({"text": "x", t[0]: t[2] + t[1], "audio": {"data": "QUJD", "mime": "audio/" + t[1]}})
    ),
)


# --- MQTT requests -------------------------------------------------------------------------------

MQTT_LIMITS = st.sampled_from([64, 4096, 1 << 20])  # the default is 1 MB

MQTT_REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "text": ANY_TEXT | JSON_VALUES,
        "id": st.integers() | ANY_TEXT | JSON_VALUES,
        "reply_to": ANY_TEXT
        | st.sampled_from(["operator/agent/in/bob", "a/+/b", "$SYS/x", "replies/ok"])
        | JSON_VALUES,
        "audio": JSON_VALUES
        | st.fixed_dictionaries(
            {},
            optional={
                "data": ANY_TEXT | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | JSON_VALUES,
                "mime": ANY_TEXT | st.sampled_from(["audio/ogg", "audio/webm;codecs=opus", "text/plain"]) | JSON_VALUES,
            },
        ),
    },
)
MQTT_PAYLOADS = st.one_of(
    st.binary(max_size=300),
    ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    MQTT_REQUESTS.map(lambda r: json.dumps(r).encode()),
    MQTT_REQUESTS.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    HOSTILE_JSON.map(str.encode),
    st.integers(4094, 4098).map(lambda n: b"{" + b" " * (n - 1)),
)


def check_mqtt_payload(payload: bytes, limit: int) -> None:
    """A request the channel can go on with, or a BadRequest whose error event can be sent: nothing else."""
    try:
        request = parse_request(payload, max_bytes=limit)
    except BadRequest as exc:
        assert exc.reason
        assert json.loads(event("error", exc.request_id, error=exc.reason))["error"] == exc.reason
        return
    assert request.text.strip() or request.audio is not None
    for text in (request.text, request.id, request.reply_to, request.audio.mime if request.audio else None):
        if text is not None:
            text.encode("utf-8")  # every field can go into a reply, the log and the model's request
    if request.reply_to is not None:
        check_reply_topic(request.reply_to, "operator/agent")
    assert json.loads(event("done", request.id, text=request.text))["text"] == request.text


@FUZZ
@given(MQTT_PAYLOADS, MQTT_LIMITS)
def test_fuzz_mqtt_request_parser(payload: bytes, limit: int) -> None:
    check_mqtt_payload(payload, limit)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b'{"text": "hi", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
        (b'{"text": "hi", "id": ' + b"9" * 5000 + b"}", "4300 digits"),
        (b'{"text": "hi \\ud800", "id": "s1"}', "text is not valid Unicode"),
        (b'{"text": "hi", "id": "\\udfff"}', "id is not valid Unicode"),
        (b'{"text": "hi", "reply_to": "replies/\\udc00"}', "reply_to is not valid Unicode"),
        (b'{"audio": {"data": "QUJD", "mime": "audio/\\ud800"}}', "audio.mime is not valid Unicode"),
    ],
)
def test_mqtt_requests_json_cannot_carry_get_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(payload, max_bytes=1 << 20)
    assert reason in refused.value.reason
    # The error event names the request when its id could be read, and can always be sent.
    assert refused.value.request_id == ("s1" if b'"s1"' in payload else None)
    event("error", refused.value.request_id, error=refused.value.reason).decode("utf-8")


def test_reply_events_survive_a_lone_surrogate_in_the_models_text() -> None:
    assert json.loads(event("delta", "r1", delta="a\ud800b"))["delta"] == "a\ud800b"


# --- web chat frames -----------------------------------------------------------------------------

# (max_message_bytes, max_audio_bytes): small ones reach the size checks, large ones the JSON decoder.
WEB_LIMITS = st.sampled_from([(512, 300), (1 << 20, 1 << 20)])

WEB_FRAMES = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "audio"]) | ANY_TEXT | JSON_VALUES},
    optional={
        "text": ANY_TEXT | JSON_VALUES | st.integers(0, 700).map(lambda n: "x" * n),
        "mime": ANY_TEXT | st.sampled_from(["audio/webm;codecs=opus", "audio/ogg", "text/plain"]) | JSON_VALUES,
        "data": st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()) | ANY_TEXT | JSON_VALUES,
    },
)
WEB_DATA = st.one_of(
    ANY_TEXT,
    st.text(max_size=600),
    WEB_FRAMES.map(json.dumps),
    WEB_FRAMES.map(lambda f: json.dumps(f, ensure_ascii=False)),
    HOSTILE_JSON.map(lambda t: t.replace('"text": "hi"', '"type": "message", "text": "hi"')),
)


def check_web_frame(data: str, limits: tuple[int, int]) -> None:
    """A message or voice note within the limits, or a BadFrame whose error event can be sent: nothing else."""
    max_message, max_audio = limits
    try:
        frame = parse_frame(data, max_message_bytes=max_message, max_audio_bytes=max_audio)
    except BadFrame as exc:
        assert exc.reason
        json.dumps({"type": "error", "error": exc.reason}).encode("utf-8")
        return
    if isinstance(frame, TextFrame):
        assert frame.text.strip() and frame_size(data) <= max_message
        frame.text.encode("utf-8")
    else:
        assert isinstance(frame, AudioFrame)
        assert 0 < len(frame.data) <= max_audio and frame.mime.startswith("audio/") and ";" not in frame.mime
        frame.mime.encode("utf-8")


@FUZZ
@given(WEB_DATA, WEB_LIMITS)
def test_fuzz_web_frame_parser(data: str, limits: tuple[int, int]) -> None:
    check_web_frame(data, limits)


@pytest.mark.parametrize(
    "data, reason",
    [
        ('{"type": "message", "text": "hi", "x": ' + _nested(50_000) + "}", "nested too deeply"),
        ('{"type": "message", "text": "hi", "n": ' + "9" * 5000 + "}", "4300 digits"),
        ('{"type": "message", "text": "hi \\ud800"}', "not valid Unicode"),
        ('{"type": "audio", "mime": "audio/\\udfff", "data": "QUJD"}', "not valid Unicode"),
        ("\ud800", "not JSON"),
        ('{"type": "message", "text": "' + "x" * 600 + '"}', "too long (631 bytes; the limit is 512)"),
    ],
)
def test_web_frames_json_cannot_carry_get_a_reason(data: str, reason: str) -> None:
    with pytest.raises(BadFrame) as refused:
        parse_frame(data, max_message_bytes=1 << 20 if len(data) > 1000 else 512, max_audio_bytes=300)
    assert reason in refused.value.reason


def test_web_frames_that_are_fine() -> None:
    assert parse_frame('{"type": "message", "text": " hi "}', max_message_bytes=100, max_audio_bytes=10) == TextFrame(
        " hi "
    )
    note = json.dumps({"type": "audio", "mime": "audio/WebM; codecs=opus", "data": base64.b64encode(b"abc").decode()})
    assert parse_frame(note, max_message_bytes=10, max_audio_bytes=10) == AudioFrame(b"abc", "audio/webm")


# --- the configuration file ----------------------------------------------------------------------


def laughs(levels: int, width: int = 9, *, mapping: bool = True, where: str = "") -> str:
    """The "billion laughs": each level aliases the one before `width` times (width**levels values)."""
    lines = []
    for i in range(levels):
        items = [f"*l{i - 1}" if i else "lol"] * width
        body = (
            ("{" + ", ".join(f"k{j}: {v}" for j, v in enumerate(items)) + "}")
            if mapping
            else "[" + ", ".join(items) + "]"
        )
        lines.append(f"{where}l{i}: &l{i} {body}")
    return "\n".join(lines) + "\n"


@contextmanager
def config_file(home: Path, content: str | bytes) -> Iterator[None]:
    path = home / "config.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    try:
        yield
    finally:
        path.unlink()


def load_or_error() -> ConfigError | None:
    """Load; a configuration that loads must also print (what `operator-use config` does)."""
    try:
        config = load_config()
    except ConfigError as exc:
        assert str(exc).strip()
        return exc
    yaml.safe_dump(config.masked(), sort_keys=False).encode("utf-8")
    return None


@pytest.mark.parametrize("mapping", [True, False])
def test_a_billion_laughs_config_is_refused_at_once(home: Path, mapping: bool) -> None:
    with config_file(home, laughs(9, mapping=mapping)):
        started = time.perf_counter()
        error = load_or_error()
        elapsed = time.perf_counter() - started
    assert error is not None and f"expands to more than {MAX_VALUES} values" in str(error)
    assert str(home / "config.yaml") in str(error)
    assert elapsed < 0.5, elapsed


def test_a_config_with_a_few_anchors_still_loads(home: Path) -> None:
    text = """\
channels:
  cli: &owner {allow_from: [me, partner], admins: [me]}
  web:
    <<: *owner
    port: 9000
llm:
  fallbacks:
    - &backup {provider: openai, model: gpt-4o-mini}
    - *backup
"""
    with config_file(home, text):
        config = load_config()
    assert config.channels.web.allow_from == ["me", "partner"] and config.channels.web.admins == ["me"]
    assert config.channels.web.port == 9000
    assert [f.model for f in config.llm.fallbacks] == ["gpt-4o-mini", "gpt-4o-mini"]


def test_a_long_plain_config_is_not_taken_for_a_bomb(home: Path) -> None:
    users = "\n".join(f"      - user{i}" for i in range(5000))
    with config_file(home, f"channels:\n  web:\n    allow_from:\n{users}\n"):
        assert len(load_config().channels.web.allow_from) == 5000


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"llm:\n  model: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 17)"),
        ("a: &a [1, *a]\n", "contains an alias to itself"),
        ("agent: " + _nested(2000) + "\n", "nested more than"),  # past the YAML composer's recursion limit
        ("agent: " + _nested(70) + "\n", "nested more than 64 levels"),
        ('channels:\n  web:\n    allow_from: ["\\ud800"]\n', "line 3 has text that is not valid Unicode"),
        (laughs(3, 50, where=""), "expands to more than"),  # wide instead of deep: 125000 values
        # PyYAML's constructors raise plain Python errors for malformed tagged values.
        ("!!timestamp \n", "could not be read (AttributeError"),
        ("agent:\n  max_iterations: !!int 0x\n", "could not be read (ValueError"),
        ("log_level: !!timestamp 2020-13-45\n", "could not be read (ValueError: month must be in 1..12)"),
    ],
)
def test_config_files_that_cannot_be_used_get_a_clear_error(home: Path, content: str | bytes, reason: str) -> None:
    with config_file(home, content):
        error = load_or_error()
    assert error is not None and reason in str(error) and str(home / "config.yaml") in str(error)


def test_a_config_file_that_cannot_be_read_is_named(home: Path) -> None:
    (home / "config.yaml").mkdir()
    error = load_or_error()
    assert error is not None and str(home / "config.yaml") in str(error) and "cannot be read" in str(error)


KEYS = [
    "llm",
    "model",
    "provider",
    "fallbacks",
    "agent",
    "max_iterations",
    "tools",
    "approvals",
    "channels",
    "cli",
    "web",
    "allow_from",
    "admins",
    "port",
    "enabled",
    "mqtt",
    "security",
    "voice",
    "mode",
    "log_level",
    "x",
]
YAML_TOKENS = st.sampled_from(
    [
        *[k + ":" for k in KEYS],
        "\n",
        "  ",
        "    ",
        "- ",
        "&a ",
        "*a",
        "&b ",
        "*b",
        "<<: *a",
        "<<: [*a, *b]",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        '"\\ud800"',
        '"\\x00"',
        "'q'",
        "!!binary ",
        "!!set ",
        "!!python/object:os.system ",
        "!!timestamp ",
        "? ",
        "|\n",
        ">-\n",
        "# c",
        "%YAML 1.1\n",
        "---\n",
        "...\n",
        "null",
        "~",
        "1e999",
        "0x10",
        "true",
        "9" * 5000,
        "\t",
        "\ufeff",
        "\x00",
        "é",
        "\U0001f600",
        "2001-12-14t21:59:43.10-05:00",
        ".nan",
        "-.inf",
    ]
)
YAML_TEXT = st.lists(YAML_TOKENS | st.text(max_size=6), max_size=60).map("".join)
CONFIG_SHAPED = st.dictionaries(
    st.sampled_from(KEYS),
    st.recursive(JSON_VALUES, lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=10),
    max_size=5,
)
CONFIG_FILES = st.one_of(
    YAML_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    CONFIG_SHAPED.map(lambda d: yaml.safe_dump(d).encode("utf-8", "surrogatepass")),
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.booleans()).map(
        lambda t: laughs(t[0], t[1], mapping=t[2]).encode()
    ),
    # Deep flow nesting is slow to scan in PyYAML (it looks 1024 characters ahead for keys): a few levels past
    # the limit here, far past it in test_config_files_that_cannot_be_used_get_a_clear_error.
    st.integers(1, 100).map(lambda d: ("agent: " + _nested(d)).encode()),
)


@settings(FUZZ, max_examples=200)
@given(CONFIG_FILES)
def test_fuzz_config_file(home: Path, content: bytes) -> None:
    with config_file(home, content):
        load_or_error()


# --- OPERATOR_* variables ------------------------------------------------------------------------

ENV_NAMES = st.lists(
    st.sampled_from(KEYS) | st.text(st.characters(codec="ascii", exclude_characters="\x00="), min_size=1, max_size=5),
    min_size=1,
    max_size=4,
).map(lambda parts: "OPERATOR_" + "__".join(parts).upper())


def _settable(value: str) -> bool:
    # What a process environment can hold: bytes the locale could not decode come back as \udc80-\udcff.
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


ENV_VALUES = st.one_of(
    ANY_TEXT,
    JSON_VALUES.map(json.dumps),
    st.sampled_from(["not json", "[", "{}", "[]", '["*"]', "true", "0", "-1"]),
    st.integers(1, 1500).map(lambda d: _nested(d)),
    st.integers(4000, 5000).map(lambda n: "[" + "9" * n + "]"),
    st.binary(max_size=10).map(lambda b: b.decode("utf-8", "surrogateescape")),
).filter(_settable)


@contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    with mock.patch.dict(os.environ, variables):
        yield


@settings(FUZZ, max_examples=200)
@given(st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=4))
def test_fuzz_environment_variables(home: Path, variables: dict[str, str]) -> None:
    variables = {k: v for k, v in variables.items() if k != "OPERATOR_HOME"}
    with environment(variables):
        load_or_error()


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("OPERATOR_CHANNELS__CLI__ALLOW_FROM", "not json", "is not valid JSON (Expecting value)"),
        ("OPERATOR_CHANNELS", "{nope", "is not valid JSON"),
        ("OPERATOR_LLM__FALLBACKS", _nested(50_000), "is not valid JSON (nested too deeply)"),
        ("OPERATOR_CHANNELS__WEB__ADMINS", "[" + "9" * 5000 + "]", "4300 digits"),
        ("OPERATOR_LLM__MODEL", "caf\udce9", "is not valid UTF-8 text"),
        ("OPERATOR_HOME", "~no-such-user-here/agent", "names a home directory that does not exist"),
    ],
)
def test_a_variable_that_cannot_be_read_is_named(home: Path, name: str, value: str, reason: str) -> None:
    with environment({name: value}):
        error = load_or_error()
    assert error is not None and str(error).startswith(f"{name} ") and reason in str(error), error


def test_json_variables_still_work(home: Path) -> None:
    with environment({"OPERATOR_CHANNELS__CLI__ALLOW_FROM": '["me", "you"]', "OPERATOR_LLM__MODEL": "m"}):
        config: Any = load_config()
    assert config.channels.cli.allow_from == ["me", "you"] and config.llm.model == "m"


# --- seeded mutation fuzzing ---------------------------------------------------------------------

# Pieces that break parsers, inserted at random places: JSON and YAML syntax, escapes of lone surrogates,
# nesting past the recursion limit, integers past int()'s 4300 digits, raw surrogates, NUL, odd characters.
TOKENS = [
    '"',
    "'",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\\",
    "\\ud800",
    "\\udfff",
    "\\u0000",
    "null",
    "true",
    "1e999",
    "-0",
    "9" * 4400,
    '"type"',
    '"message"',
    '"audio"',
    '"text"',
    '"id"',
    '"reply_to"',
    '"mime"',
    '"data"',
    '"audio/ogg"',
    "QUJD",
    "\ud800",
    "\x00",
    "é",
    "\U0001f600",
    " ",
    "\n",
    "&a ",
    "*a",
    "<<: *a",
    "- ",
    "!!binary ",
    "!!set ",
    "? ",
    "---\n",
    "\t",
    "\ufeff",
    "[" * 70,
    "{a: " * 70,
]
JSON_TOKENS = [*TOKENS, "[" * 1500, '{"a":' * 1500]  # cheap for the C JSON decoder, slow for PyYAML's scanner


def mutate(rng: random.Random, text: str, tokens: list[str] = TOKENS) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(text))
        op = rng.randrange(5)
        if op == 0:
            text = text[:at] + rng.choice(tokens) + text[at:]
        elif op == 1:
            text = text[:at] + text[at + rng.randint(1, 8) :]
        elif op == 2:
            text = text[:at] + chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0, 0x10FFFF)])) + text[at + 1 :]
        elif op == 3:
            text = text[:at] + text[at : at + rng.randint(1, 40)] * rng.randint(2, 5) + text[at:]
        else:
            text = text[:at]
    return text


def mutation_fuzz(
    seeds: list[str], runs: int, check: Callable[[str], bool], seed: int, tokens: list[str] = TOKENS
) -> tuple[int, int]:
    """`check` on `runs` mutants of the seeds (each seed also as is); returns (accepted, refused)."""
    rng = random.Random(seed)
    accepted = refused = 0
    for i in range(runs):
        text = seeds[i] if i < len(seeds) else mutate(rng, rng.choice(seeds), tokens)
        if check(text):
            accepted += 1
        else:
            refused += 1
    return accepted, refused


MQTT_SEEDS = [
    "turn on the lights",
    json.dumps({"text": "hi", "id": "r1"}),
    json.dumps({"text": "hi", "id": 7}),
    json.dumps({"text": "hi", "reply_to": "devices/lamp/replies"}),
    json.dumps({"audio": {"data": "T2dnUw==", "mime": "audio/ogg"}, "id": "a1", "text": ""}),
    '{"text": "hi \\ud800", "id": "s"}',
    '{"text": "x", "id": ' + "9" * 4400 + "}",
    '{"text": "x", "n": ' + _nested(1500) + "}",
]


def test_mutation_fuzz_mqtt_request_parser() -> None:
    def check(text: str) -> bool:
        payload = text.encode("utf-8", "surrogatepass")
        try:
            parse_request(payload, max_bytes=1 << 20)
        except BadRequest:
            pass
        check_mqtt_payload(payload, 1 << 20)
        try:
            parse_request(payload, max_bytes=1 << 20)
            return True
        except BadRequest:
            return False

    accepted, refused = mutation_fuzz(MQTT_SEEDS, 5000, check, seed=1, tokens=JSON_TOKENS)
    assert accepted > 50 and refused > 500, (accepted, refused)


WEB_SEEDS = [
    json.dumps({"type": "message", "text": "hello"}),
    json.dumps({"type": "message", "text": "é ✓"}),
    json.dumps({"type": "audio", "mime": "audio/webm;codecs=opus", "data": "T2dnUw=="}),
    '{"type": "message", "text": "hi \\ud800"}',
    '{"type": "message", "text": "x", "n": ' + "9" * 4400 + "}",
    '{"type": "message", "text": "x", "n": ' + _nested(1500) + "}",
]


def test_mutation_fuzz_web_frame_parser() -> None:
    def check(text: str) -> bool:
        check_web_frame(text, (1 << 20, 1 << 20))
        check_web_frame(text, (64, 16))
        try:
            parse_frame(text, max_message_bytes=1 << 20, max_audio_bytes=1 << 20)
            return True
        except BadFrame:
            return False

    accepted, refused = mutation_fuzz(WEB_SEEDS, 5000, check, seed=2, tokens=JSON_TOKENS)
    assert accepted > 50 and refused > 500, (accepted, refused)


CONFIG_SEEDS = [
    """\
llm:
  provider: openai
  model: gpt-4o-mini
  fallbacks:
    - &backup {provider: anthropic, model: claude}
    - *backup
agent:
  max_iterations: 20
  tools: "*"
channels:
  cli: &owner {enabled: true, allow_from: [me]}
  web:
    <<: *owner
    port: 8765
""",
    laughs(3, 3),
    laughs(2, 4, mapping=False),
    'channels:\n  web:\n    allow_from: ["\\ud800"]\n',
]


def test_mutation_fuzz_config_file(home: Path) -> None:
    def check(text: str) -> bool:
        with config_file(home, text):
            return load_or_error() is None

    accepted, refused = mutation_fuzz(CONFIG_SEEDS, 1000, check, seed=3)
    assert accepted > 50 and refused > 50, (accepted, refused)


ENV_SEEDS = [
    '["me", "you"]',
    '{"enabled": true, "allow_from": ["*"]}',
    '[{"provider": "openai", "model": "m"}]',
    "gpt-4o-mini",
    "8765",
    "true",
    "not json",
]
ENV_TARGETS = [
    "OPERATOR_CHANNELS__CLI__ALLOW_FROM",
    "OPERATOR_CHANNELS__WEB",
    "OPERATOR_LLM__FALLBACKS",
    "OPERATOR_LLM__MODEL",
    "OPERATOR_CHANNELS__WEB__PORT",
    "OPERATOR_AGENT__TOOLS",
    "OPERATOR_CHANNELS",
    "OPERATOR_SECURITY",
    "OPERATOR_VOICE__MODE",
    "OPERATOR_AGENT__APPROVALS__ALLOW",
]


def test_mutation_fuzz_environment_variables(home: Path) -> None:
    rng = random.Random(4)

    def check(text: str) -> bool:
        # A process environment holds no NUL, and undecodable bytes only as \udc80-\udcff.
        value = text.replace("\x00", "").encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
        with environment({rng.choice(ENV_TARGETS): value}):
            return load_or_error() is None

    accepted, refused = mutation_fuzz(ENV_SEEDS, 1000, check, seed=5, tokens=JSON_TOKENS)
    assert accepted > 50 and refused > 50, (accepted, refused)
