"""What every worker process shares: the operations endpoint (``/healthz``, ``/readyz``,
``/metrics``) and the one way a process waits for SIGTERM / SIGINT.

APIs mount the same routes on their own app; workers (command worker, relay, intake,
projector, query worker) serve them on a separate port with :func:`serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from shared.http import ReadinessCheck, install_health_routes
from shared.tracing import fastapi_telemetry


def ops_app(title: str, checks: dict[str, ReadinessCheck]) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry=fastapi_telemetry(requests=False))
    install_health_routes(app, checks)
    return app


async def serve_ops(
    title: str, host: str, port: int, checks: dict[str, ReadinessCheck]
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start the ops server in the running loop; stop it with ``server.should_exit = True``."""
    config = uvicorn.Config(ops_app(title, checks), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the process owns signals
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # re-raise a bind error (port taken) to the caller
    return server, task


@contextlib.asynccontextmanager
async def serving(title: str, host: str, port: int, checks: dict[str, ReadinessCheck]) -> AsyncIterator[None]:
    """Serve the ops endpoint for the duration of the block, and stop it however the block ends."""
    server, task = await serve_ops(title, host, port, checks)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def until_stopped() -> None:
    """Wait for SIGTERM or SIGINT (a process's clean shutdown signal)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def until_stopped_or_done(task: asyncio.Task[None]) -> None:
    """Wait for SIGTERM/SIGINT, or for ``task`` to end by itself (its error stays in it)."""
    stopper = asyncio.create_task(until_stopped())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
