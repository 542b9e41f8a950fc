"""The operations endpoint of a worker process: ``/healthz``, ``/readyz``, ``/metrics``.

APIs mount the same routes on their own app; workers (command worker, relay,
projector, query worker) serve them on a separate port with this helper.
"""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI

from shared.http import ReadinessCheck, install_health_routes


def ops_app(title: str, checks: dict[str, ReadinessCheck]) -> FastAPI:
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
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
