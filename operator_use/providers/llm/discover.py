"""Ask an OpenAI-compatible server which models it serves (`GET {base_url}/models`).

Used at start when only `llm.base_url` is configured, and by onboarding and `doctor`. Every failure is a
`DiscoveryError` whose message names the URL (its user:password@ masked) and what went wrong, ready to show
to the user.

The server is not trusted: the whole request has one deadline (a body trickled a byte at a time would
otherwise reset httpx's per-read timeout forever), the body is capped, and an id that would reach the
terminal as escape sequences, bidi overrides or invisible characters, or that is absurdly long, is left out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

# The whole request, connection to the last byte of the body.
DEADLINE = 10.0
# A few thousand models with their metadata fit in well under this.
MAX_BODY = 4 * 1024 * 1024
MAX_ID_CHARS = 200
# Ids shown to a person at once; the rest are counted.
SHOWN_IDS = 30


class DiscoveryError(Exception):
    """The server could not be asked, or its answer was not a model list; the message says which."""

    def __init__(self, url: str, problem: str, *, status: int | None = None) -> None:
        from ...security.redact import strip_url_credentials

        url = strip_url_credentials(url)
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem
        self.status = status  # the HTTP status when the server answered with an error


def models_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/models"


# `timeout` bounds the whole request (connect, headers and body), whatever the server does.
async def list_models(base_url: str, api_key: str | None = None, timeout: float = DEADLINE) -> list[str]:  # noqa: ASYNC109
    """The model ids the server at `base_url` (e.g. "http://127.0.0.1:8000/v1") lists, in its order, without
    repeats and without ids unfit to print (see `usable_id`).

    An empty list means the server answered but serves no model. Raises DiscoveryError otherwise."""
    import httpx

    url = models_url(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = False  # headers received: a timeout after this is a body too slow, not a silent server
    try:
        async with asyncio.timeout(timeout):
            async with (
                httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                started = True
                status = response.status_code
                if status in (401, 403):
                    raise DiscoveryError(
                        url, f"HTTP {status}: the server wants an API key (set llm.api_key)", status=status
                    )
                if status != 200:
                    raise DiscoveryError(url, f"HTTP {status} instead of a model list")
                raw = await _body(response, url)
    except TimeoutError:
        if started:
            raise DiscoveryError(url, f"the model list did not arrive in full within {timeout:g} seconds") from None
        raise DiscoveryError(url, f"no answer within {timeout:g} seconds") from None
    except httpx.InvalidURL as exc:
        raise DiscoveryError(url, f"not a valid URL ({exc})") from None
    except httpx.UnsupportedProtocol:
        raise DiscoveryError(url, "not an http:// or https:// URL") from None
    except httpx.TimeoutException:
        raise DiscoveryError(url, f"no answer within {timeout:g} seconds") from None
    except httpx.ConnectError as exc:
        raise DiscoveryError(url, f"cannot connect ({_reason(exc)})") from None
    except httpx.HTTPError as exc:
        raise DiscoveryError(url, f"request failed ({_reason(exc)})") from None
    try:
        body: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise DiscoveryError(url, "the answer is not JSON (is this an OpenAI-compatible /v1 URL?)") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise DiscoveryError(url, 'the answer has no "data" list of models (is this an OpenAI-compatible /v1 URL?)')
    ids = [m["id"] for m in data if isinstance(m, dict) and usable_id(m.get("id"))]
    return list(dict.fromkeys(ids))


async def _body(response: Any, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise DiscoveryError(url, f"the model list is larger than {MAX_BODY // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise DiscoveryError(url, f"the model list is larger than {MAX_BODY // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def usable_id(value: object) -> bool:
    """A model id fit to print and put in config.yaml: text, not blank, at most MAX_ID_CHARS characters, and
    no control (C0/C1), format (bidi, zero-width), line-separator or other invisible character."""
    from ...security.preview import is_hidden

    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS:
        return False
    return not any(ch in "\n\t" or is_hidden(ch) for ch in value)


def shown_ids(models: Sequence[str], limit: int = SHOWN_IDS) -> list[str]:
    """At most `limit` ids, then "… and N more" for the rest."""
    shown = list(models[:limit])
    if len(models) > limit:
        shown.append(f"… and {len(models) - limit} more")
    return shown


def _reason(exc: Exception) -> str:
    from ...security.redact import strip_url_credentials

    text = strip_url_credentials(str(exc).strip())
    return text or type(exc).__name__
