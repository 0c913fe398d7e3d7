"""The first model: with only `llm.base_url` set, the server is asked which models it serves (GET /v1/models).
One: it is used and named. Several: they are listed with how to choose, exit 1. None or no answer: a specific
error naming the URL, never the generic "No LLM found" block. No API key is needed for any of this."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from operator_use.config import LLMConfig
from operator_use.messages import HumanMessage
from operator_use.providers.llm.base import TextChunk
from operator_use.providers.llm.discover import DiscoveryError, list_models
from operator_use.providers.llm.setup import llm_from_config

from .fakes.llm_server import FakeLLMServer, echo_responder
from .support.agent_process import agent_env, run_cli, running_agent, spawned, web_chat
from .support.serve import serve
from .support.web import chat_at

NO_LLM = "No LLM found"


def base_env(home: Path) -> dict[str, str]:
    # Only what a shell would have: no API key of any provider.
    return agent_env(home, **web_chat())


async def run_to_end(home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = await run_cli("run", env={**base_env(home), **env})
    return result.returncode, result.stderr


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused for as long as it is held."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def plain_server(handler: web.Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner, port = await serve(app)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


# --- list_models -----------------------------------------------------------------------------------


async def test_list_models_returns_the_ids_in_order_without_repeats() -> None:
    async with FakeLLMServer(models=["b-model", "a-model", "b-model"]) as server:
        assert await list_models(server.openai_base_url) == ["b-model", "a-model"]
        assert await list_models(server.openai_base_url + "/") == ["b-model", "a-model"]
    async with FakeLLMServer(models=[]) as server:
        assert await list_models(server.openai_base_url) == []


async def test_list_models_sends_the_key_when_given_and_says_when_one_is_wanted() -> None:
    async with FakeLLMServer(models=["m"], api_key="sk-right") as server:
        assert await list_models(server.openai_base_url, api_key="sk-right") == ["m"]
        with pytest.raises(DiscoveryError) as caught:
            await list_models(server.openai_base_url)
    assert caught.value.url == server.openai_base_url + "/models"
    assert "HTTP 401: the server wants an API key (set llm.api_key)" in str(caught.value)


async def test_list_models_names_a_refused_connection() -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(DiscoveryError) as caught:
            await list_models(url)
    assert str(caught.value).startswith(f"{url}/models: cannot connect (")


async def test_list_models_names_a_server_that_never_answers() -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DiscoveryError) as caught:
            await list_models(f"http://127.0.0.1:{port}/v1", timeout=0.2)
        assert accepted.is_set()
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    assert caught.value.problem == "no answer within 0.2 seconds"


@pytest.mark.parametrize(
    "status, body, content_type, problem",
    [
        (404, "not here", "text/plain", "HTTP 404 instead of a model list"),
        (200, "<html>hello</html>", "text/html", "the answer is not JSON (is this an OpenAI-compatible /v1 URL?)"),
        (200, '{"models": []}', "application/json", 'the answer has no "data" list of models'),
    ],
)
async def test_list_models_names_an_answer_that_is_not_a_model_list(
    status: int, body: str, content_type: str, problem: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    async with plain_server(handler) as url:
        with pytest.raises(DiscoveryError) as caught:
            await list_models(url)
    assert caught.value.problem.startswith(problem)


async def test_list_models_names_a_url_that_is_not_http() -> None:
    with pytest.raises(DiscoveryError) as caught:
        await list_models("localhost:8000/v1")
    assert "not an http:// or https:// URL" in str(caught.value)


# --- choosing the model (the setup, in process) ---------------------------------------------------------


async def test_only_a_base_url_uses_the_only_model_and_needs_no_key() -> None:
    async with FakeLLMServer(responder=echo_responder(), models=["only-model"]) as server:
        llm, reason = await llm_from_config(LLMConfig(base_url=server.openai_base_url), env={})
        assert llm is not None
        try:
            assert llm.model == "only-model" and reason == f"the only model served at {server.openai_base_url}"
            chunks = [c async for c in llm.stream([HumanMessage(content="hi")])]
        finally:
            await llm.aclose()
    text = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert text == "You said: hi" and server.requests[-1]["model"] == "only-model"


async def test_a_local_preset_without_a_model_asks_its_server_too() -> None:
    async with FakeLLMServer(models=["llama3.2"]) as server:
        llm, reason = await llm_from_config(LLMConfig(provider="ollama", base_url=server.openai_base_url), env={})
        assert llm is not None
        await llm.aclose()
    assert llm.model == "llama3.2" and reason == f"the only model served at {server.openai_base_url}"


async def test_a_preset_with_a_custom_base_url_needs_no_key() -> None:
    async with FakeLLMServer(responder=echo_responder()) as server:
        config = LLMConfig(provider="openai", model="fake-model", base_url=server.openai_base_url)
        llm, _ = await llm_from_config(config, env={})
        assert llm is not None
        try:
            chunks = [c async for c in llm.stream([HumanMessage(content="yo")])]
        finally:
            await llm.aclose()
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "You said: yo"


async def test_a_specific_setup_problem_is_not_followed_by_the_no_llm_block() -> None:
    llm, reason = await llm_from_config(LLMConfig(provider="groq"), env={})
    assert llm is None
    assert reason == "LLM configuration problem: GROQ_API_KEY is not set (needed for provider 'groq')"
    assert NO_LLM not in reason


# --- operator-use run -------------------------------------------------------------------------------


async def test_run_with_only_a_base_url_starts_with_the_only_model_and_replies(home: Path) -> None:
    async with FakeLLMServer(responder=echo_responder(), models=["only-model"]) as server:
        env = {**base_env(home), "OPERATOR_LLM__BASE_URL": server.openai_base_url}
        async with running_agent(env) as agent:
            _, tab = await chat_at(agent.web_chat_url, "which model?")
    stderr = agent.stderr
    assert agent.proc.returncode == 0, stderr
    assert f"Model: openai-compatible/only-model (the only model served at {server.openai_base_url})" in stderr
    assert any(e.get("text") == "You said: which model?" for e in tab.events), tab.events
    chat = [c for c in server.calls if c.path.endswith("/chat/completions")]
    assert chat and all(c.body and c.body["model"] == "only-model" for c in chat)
    assert "Traceback" not in stderr


async def test_run_with_several_models_lists_them_and_says_how_to_choose(home: Path) -> None:
    async with FakeLLMServer(models=["llama3.2", "qwen2.5-coder"]) as server:
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": server.openai_base_url})
    assert status == 1, stderr
    assert f"the server at {server.openai_base_url} serves 2 models:\n  llama3.2\n  qwen2.5-coder\n" in stderr
    assert "llm:\n    model: llama3.2" in stderr and "OPERATOR_LLM__MODEL=llama3.2" in stderr
    assert NO_LLM not in stderr and "Traceback" not in stderr
    assert not [c for c in server.calls if c.method == "POST"]  # nothing was sent to a model


async def test_run_with_a_server_serving_no_model_says_so(home: Path) -> None:
    async with FakeLLMServer(models=[]) as server:
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": server.openai_base_url})
    assert status == 1, stderr
    assert f"the server at {server.openai_base_url} serves none (its model list is empty)" in stderr
    assert NO_LLM not in stderr and "Traceback" not in stderr


async def test_run_with_an_unreachable_base_url_names_it_without_the_no_llm_block(home: Path) -> None:
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/v1"
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": url})
    assert status == 1, stderr
    assert f"the server at {url} could not be asked which models it serves: cannot connect (" in stderr
    assert f"(GET {url}/models)" in stderr and "OPERATOR_LLM__MODEL" in stderr
    assert NO_LLM not in stderr and "ANTHROPIC_API_KEY" not in stderr and "Traceback" not in stderr


# --- a server that is slow, silent, huge or hostile ---------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(respond: bool, accepted: asyncio.Event | None = None) -> AsyncIterator[str]:
    """A loopback HTTP server that reads the request, then either never answers or sends a 200 whose body
    comes one byte every half second, for as long as the client stays."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            if accepted is not None:
                accepted.set()
            if not respond:
                await reader.read()  # until the client goes away
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            await writer.drain()
            for byte in iter(lambda: b" ", None):  # whitespace before the JSON: valid, and never done
                writer.write(byte)
                await writer.drain()
                await asyncio.sleep(0.5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_list_models_gives_up_on_a_body_trickled_a_byte_at_a_time() -> None:
    """httpx's timeout is per read: a byte every half second would keep it waiting forever."""
    async with raw_server(respond=True) as url:
        with pytest.raises(DiscoveryError) as caught:
            await list_models(url, timeout=1)
    assert caught.value.problem == "the model list did not arrive in full within 1 seconds"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_list_models_refuses_a_body_over_its_cap(declared: bool) -> None:
    from operator_use.providers.llm import discover

    entry = b'{"id": "m", "object": "model"},'
    count = discover.MAX_BODY // len(entry) + 1
    body = b'{"data": [' + entry * count + b'{"id": "last"}]}'

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = len(body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(body), 65536):
                await response.write(body[start : start + 65536])
        return response

    async with plain_server(handler) as url:
        with pytest.raises(DiscoveryError) as caught:
            await list_models(url)
    assert caught.value.problem == "the model list is larger than 4 MB"


HOSTILE_IDS = [
    "\x1b[2J\x1b[Hwiped",  # ESC: clears the screen
    "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07",  # OSC 8 hyperlink
    "fake\rreal",  # CR: overwrites the line
    "\u202egpt-4o",  # RIGHT-TO-LEFT OVERRIDE
    "gpt\u200b-4o",  # ZERO WIDTH SPACE
    "model\u2028next line",  # LINE SEPARATOR
    "c1\x9b2J",  # C1 CSI
    "tab\tbed",
    "x" * 201,
    "   ",
]


async def test_list_models_leaves_out_ids_unfit_to_print() -> None:
    fine = ["llama3.2:3b-instruct-q4_K_M", "org/Modèle-7B", "x" * 200]
    async with FakeLLMServer(models=[HOSTILE_IDS[0], fine[0], *HOSTILE_IDS[1:], fine[1], fine[2]]) as server:
        assert await list_models(server.openai_base_url) == fine


async def test_run_with_only_hostile_ids_prints_none_of_them(home: Path) -> None:
    async with FakeLLMServer(models=[*HOSTILE_IDS, "ok-a", "ok-b"]) as server:
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": server.openai_base_url})
    assert status == 1, stderr
    assert "serves 2 models:\n  ok-a\n  ok-b\n" in stderr
    for bad in ("\x1b", "\r", "\u202e", "\u200b", "\u2028", "\x9b", "x" * 201):
        assert bad not in stderr


async def test_run_lists_at_most_30_models_and_counts_the_rest(home: Path) -> None:
    models = [f"model-{i:02d}" for i in range(45)]
    async with FakeLLMServer(models=models) as server:
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": server.openai_base_url})
    assert status == 1, stderr
    assert "serves 45 models:\n" + "".join(f"  {m}\n" for m in models[:30]) + "  … and 15 more\n" in stderr
    assert "model-30" not in stderr


async def test_run_gives_up_on_a_server_trickling_its_model_list(home: Path) -> None:
    async with raw_server(respond=True) as url:
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": url})
    assert status == 1, stderr
    assert (
        f"the server at {url} could not be asked which models it serves: the model list did not arrive in full "
        "within 10 seconds" in stderr
    )
    assert NO_LLM not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_stops_at_once_when_told_to_while_a_server_keeps_it_waiting(home: Path, sig: int) -> None:
    accepted = asyncio.Event()
    async with raw_server(respond=False, accepted=accepted) as url:
        env = {**base_env(home), "OPERATOR_LLM__BASE_URL": url}
        async with spawned("run", env=env, stdout=asyncio.subprocess.DEVNULL) as proc:
            await asyncio.wait_for(accepted.wait(), 60)  # asking for the model list, which never comes
            proc.send_signal(sig)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "Stopped before the agent started." in stderr
    assert "could not be asked" not in stderr and "Traceback" not in stderr


# --- credentials in the server's URL --------------------------------------------------------------------


async def test_discovery_never_shows_the_user_and_password_of_the_url(home: Path) -> None:
    with refusing_port() as port:
        url = f"http://bob:hunter2@127.0.0.1:{port}/v1"
        with pytest.raises(DiscoveryError) as caught:
            await list_models(url)
        status, stderr = await run_to_end(home, {"OPERATOR_LLM__BASE_URL": url})
    assert caught.value.url == f"http://***@127.0.0.1:{port}/v1/models" and "hunter2" not in str(caught.value)
    assert status == 1, stderr
    assert f"the server at http://***@127.0.0.1:{port}/v1 could not be asked" in stderr
    assert f"(GET http://***@127.0.0.1:{port}/v1/models)" in stderr
    assert "hunter2" not in stderr and "bob" not in stderr

    async with FakeLLMServer(models=["one", "two"]) as server:
        with_user = server.openai_base_url.replace("http://", "http://bob:hunter2@")
        _, several = await llm_from_config(LLMConfig(base_url=with_user), env={})
    assert f"the server at {server.openai_base_url.replace('http://', 'http://***@')} serves 2 models" in several
    assert "hunter2" not in several
    async with FakeLLMServer(models=["one"]) as server:
        with_user = server.openai_base_url.replace("http://", "http://bob:hunter2@")
        llm, reason = await llm_from_config(LLMConfig(base_url=with_user), env={})
        assert llm is not None
        await llm.aclose()
    assert reason == f"the only model served at {server.openai_base_url.replace('http://', 'http://***@')}"
