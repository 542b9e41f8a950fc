"""A webhook receiver for the tests: a real HTTP server on loopback (aiohttp) whose paths
behave as a receiver may: answer 200, fail for a while, redirect, never answer, or send
a huge body; it records what it got."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from shared.net import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    failing_until: dict[str, float] = field(default_factory=dict)  # path -> answer 500 until then
    huge_bytes_sent: int = 0

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await request.read()
        self.received.append(Received(path, dict(request.headers), body, time.monotonic()))
        if path.startswith("/never"):
            await asyncio.sleep(3600)
        if path.startswith("/redirect"):
            raise web.HTTPFound(self.base_url + "/trap")
        if path.startswith("/huge"):
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            chunk = b"x" * (1 << 20)
            for _ in range(100):  # 100 MiB, unless the client hangs up first
                await response.write(chunk)
                self.huge_bytes_sent += len(chunk)
            return response
        if time.monotonic() < self.failing_until.get(path, 0.0):
            return web.Response(status=500, text="not now")
        return web.Response(status=200, text="ok")


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application(client_max_size=16 << 20)
    app.router.add_route("POST", "/{tail:.*}", receiver._handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.base_url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
