"""The command HTTP API (DESIGN section 5, port 8001): the FastAPI app.

The factory, its lifespan (the runtime from services/command/bootstrap.py), the
middleware (auth outermost, then the body limit), the health routes and the OpenAPI
document's settings-dependent limits. The routes are services/command/entrypoints/http/routes.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from services.command.bootstrap import CommandRuntime, command_runtime, ops_checks
from services.command.config import CommandSettings
from services.command.entrypoints.http.body_limit import MAX_BODY_BYTES, BodyLimit
from services.command.entrypoints.http.routes import router
from services.webhooks.entrypoints.http import router as webhooks_router
from shared.auth import Authenticate
from shared.http import install_health_routes, install_problem_handlers
from shared.tracing import fastapi_telemetry


def create_app(settings: CommandSettings | None = None, runtime: CommandRuntime | None = None) -> FastAPI:
    """The ASGI app. With ``runtime`` (tests, benchmark) it uses that; otherwise its
    lifespan opens one from ``settings`` (pool, migrations, client, embedded worker)."""
    settings = settings or (runtime.settings if runtime else CommandSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            yield
            return
        async with command_runtime(settings) as opened:
            app.state.runtime = opened
            yield

    app = FastAPIOffline(  # /docs and /redoc assets served locally, not from a CDN
        title="Payments command API",
        version="1.0.0",
        description="Commands on payments (create, update, transitions, delete, batch), run as Temporal "
        "workflows and written with their events in one PostgreSQL transaction. Errors are RFC 9457 "
        "problem+json. Auth: `Authorization: Bearer <JWT>` with `org` and `scope: payments:write`.",
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),  # server spans when tracing (shared/tracing.py)
    )
    app.state.settings = settings
    if runtime is not None:
        app.state.runtime = runtime
    install_problem_handlers(app)

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Authenticate)  # outermost: no token, no body read

    async def check(name: str) -> None:
        await ops_checks(app.state.runtime)[name]()

    install_health_routes(app, {"postgres": lambda: check("postgres"), "temporal": lambda: check("temporal")})
    app.include_router(router)
    app.include_router(webhooks_router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, settings: CommandSettings) -> dict[str, Any]:
    """FastAPI's document, with the limits that come from settings (not the models)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        batch = schema["components"]["schemas"]["BatchCreateRequest"]["properties"]["items"]
        batch["maxItems"] = min(batch["maxItems"], settings.command_max_batch_items)
        app.openapi_schema = schema
    return app.openapi_schema
