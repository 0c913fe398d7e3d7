"""Slack attachments to message parts: images for the model, audio for speech-to-text, the rest saved
in the workspace. Downloads carry the bot token, so they only go to Slack's own file hosts (or the
configured API host: GovSlack, proxies, tests)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ...messages import AudioPart, FilePart, ImagePart, Part, TextPart
from ..base import withheld
from ..inbox import save_to_inbox

log = logging.getLogger(__name__)

_SLACK_HOST_SUFFIXES = (".slack.com", ".slack-edge.com", ".slack-gov.com")


class FileFetcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str,
        api_base_url: str,
        workspace: Path,
        inbox_dir: str,
        max_bytes: int,
    ) -> None:
        self.session = session
        self._token = token
        self._api_host = urlsplit(api_base_url).hostname or ""
        self.workspace = workspace
        self.inbox_dir = inbox_dir
        self.max_bytes = max_bytes

    async def parts(self, files: list[dict[str, Any]]) -> list[Part]:
        out: list[Part] = []
        for info in files:
            name = file_name(info)
            try:
                out.append(await self._part(info, name))
            except FileError as exc:
                # The message still goes through; the agent hears what could not be read.
                log.warning("slack file %s (%s) not fetched: %s", info.get("id"), name, exc)
                out.append(TextPart(text=f"[attachment {name} could not be read: {exc}]"))
        return out

    async def _part(self, info: dict[str, Any], name: str) -> Part:
        mime = str(info.get("mimetype") or "application/octet-stream")
        kind = _kind(info, mime)
        if info.get("mode") in ("tombstone", "hidden_by_limit") or info.get("file_access") == "check_file_info":
            raise FileError("Slack did not share its content with the app")
        size = info.get("size")
        if isinstance(size, int) and size > self.max_bytes:
            raise FileError(f"{size} bytes is over the {self.max_bytes}-byte limit")
        data = await self._download(str(info.get("url_private_download") or info.get("url_private") or ""), mime)
        if kind == "image":
            return ImagePart(data=data, mime=mime)
        if kind == "audio":
            duration = info.get("duration_ms")
            return AudioPart(
                data=data,
                mime=_audio_mime(mime),
                voice_note=info.get("subtype") == "slack_audio",
                duration_s=duration / 1000 if isinstance(duration, (int, float)) else None,
            )
        path = await asyncio.to_thread(self._save, str(info.get("id") or uuid.uuid4().hex[:8]), name, data)
        return FilePart(name=name, mime=mime, path=path)

    async def _download(self, url: str, mime: str) -> bytes:
        host = urlsplit(url).hostname or ""
        if not url or not (host == self._api_host or host.endswith(_SLACK_HOST_SUFFIXES)):
            raise FileError(f"no download URL on a Slack host ({host or 'none'})")
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                if resp.status != 200:
                    raise FileError(f"download failed with HTTP {resp.status}")
                # Without the files:read scope Slack answers with its HTML sign-in page, not the file.
                if resp.content_type == "text/html" and mime != "text/html":
                    raise FileError("Slack refused the download (does the app have the files:read scope?)")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise FileError(f"over the {self.max_bytes}-byte limit")
                return bytes(data)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FileError(f"download failed: {exc!r}") from exc

    def _save(self, file_id: str, name: str, data: bytes) -> str:
        # The file id keeps names unique and recognisable.
        prefix = re.sub(r"[^A-Za-z0-9]", "", file_id)[:32] or "file"
        target = save_to_inbox(self.workspace / self.inbox_dir, name, data=data, prefix=prefix)
        return target.relative_to(self.workspace).as_posix()


class FileError(Exception):
    pass


def file_name(info: dict[str, Any]) -> str:
    return str(info.get("name") or info.get("title") or info.get("id") or "file")


def withheld_files(files: list[dict[str, Any]]) -> list[Part]:
    """An unknown sender's files, named but never fetched (`Channel.may_fetch`)."""
    return [withheld(f"attachment {file_name(info)}") for info in files]


def _kind(info: dict[str, Any], mime: str) -> str:
    if mime.startswith("image/"):
        return "image"
    # Slack voice clips are sometimes labelled video/mp4; their subtype says what they are.
    if mime.startswith("audio/") or info.get("subtype") == "slack_audio":
        return "audio"
    return "file"


def _audio_mime(mime: str) -> str:
    return "audio/mp4" if mime == "video/mp4" else mime
