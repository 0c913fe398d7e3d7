"""A fake of the OpenAI audio endpoints (`/v1/audio/transcriptions`, `/v1/audio/speech`) on 127.0.0.1.

The real OpenAI SDK talks to it over HTTP (multipart upload, binary response), so request building and
error mapping are exercised without a network:

    async with FakeAudioServer(transcript="hello", speech=ogg_bytes) as server:
        OpenAITranscriber(api_key="k", base_url=server.base_url)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..support.serve import serve


@dataclass
class Upload:
    model: str
    filename: str
    content_type: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)
    authorization: str = ""


class FakeAudioServer:
    def __init__(
        self,
        *,
        transcript: str = "",
        speech: bytes = b"",
        speech_type: str = "audio/ogg",
        status: int = 200,
        error_message: str = "fake failure",
    ) -> None:
        self.transcript = transcript
        self.speech = speech
        self.speech_type = speech_type
        # Anything but 200 answers every request with that error. Its message may quote, as real APIs do,
        # the `{key}` the request carried and a `{request_id}` new at each request.
        self.status = status
        self.error_message = error_message
        self.uploads: list[Upload] = []
        self.speech_requests: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeAudioServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = self.error_message.format(key=key, request_id=f"req_{uuid.uuid4().hex}")
        return web.json_response(
            {"error": {"message": message, "type": "server_error", "code": None}}, status=self.status
        )

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return self._error(request)
        upload = Upload(
            model="", filename="", content_type="", data=b"", authorization=request.headers.get("Authorization", "")
        )
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                upload.filename = part.filename or ""
                upload.content_type = part.headers.get("Content-Type", "")
                upload.data = bytes(await part.read())
            elif part.name:
                upload.fields[part.name] = await part.text()
        upload.model = upload.fields.get("model", "")
        self.uploads.append(upload)
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return self._error(request)
        self.speech_requests.append(await request.json())
        return web.Response(body=self.speech, content_type=self.speech_type)
