"""``BodyLimit``: the command API's request-size limit, enforced on the stream."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import PROBLEM_BASE, problem_response

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """Answer 413 once a body crosses ``limit`` bytes: at once when Content-Length says
    so, otherwise as soon as the streamed (chunked) body does, without reading the rest.
    Plain ASGI: no per-request task group like ``@app.middleware``."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, scope: Scope) -> Response:
        return problem_response(413, "Content Too Large", f"request bodies are limited to {self.limit} bytes",
                                type_=PROBLEM_BASE + "body-too-large", instance=scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._too_large(scope)(scope, receive, send)
            return
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    # Answer now; the app sees a disconnect and its own answer is dropped.
                    refused = True
                    await self._too_large(scope)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
