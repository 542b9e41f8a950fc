"""The query HTTP API (FastAPI, default port 8002): DESIGN section 5, query service.

The factory, its lifespan (one :func:`query_runtime`) and middleware; the routes are in
:mod:`routes`, the error mapping in :mod:`errors`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from pymongo.errors import PyMongoError

from services.query.bootstrap import QueryRuntime, ops_checks, query_runtime
from services.query.entrypoints.http import export_routes
from services.query.entrypoints.http.routes import router
from shared.auth import Authenticate
from shared.http import install_health_routes, install_problem_handlers
from shared.settings import Settings, get_settings
from shared.tracing import fastapi_telemetry

log = logging.getLogger("payments.query.api")


async def _ensure_indexes(runtime: QueryRuntime) -> None:
    # Searches hint at these indexes: a query API that starts before any projector (a
    # fresh database) must not answer 500 for want of them.
    try:
        await runtime.read_model.ensure_indexes()
    except PyMongoError as exc:  # MongoDB away: /readyz says so; the projector creates them too
        log.warning("could not ensure the read model's indexes: %s", exc)


def create_app(settings: Settings | None = None, runtime: QueryRuntime | None = None) -> FastAPI:
    """The ASGI app. With ``runtime`` (tests, benchmarks) it uses that; otherwise its
    lifespan opens one from ``settings``."""
    settings = settings or (runtime.settings if runtime else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            await _ensure_indexes(runtime)
            yield
            return
        async with query_runtime(settings) as opened:
            app.state.runtime = opened
            await _ensure_indexes(opened)
            yield

    app = FastAPIOffline(  # /docs and /redoc assets served locally, not from a CDN
        title="Payments query API",
        version="1.0.0",
        description=(
            "Search, get-by-id and statistics over the payments read model (MongoDB, cached in Redis).\n\n"
            "Authenticate with `Authorization: Bearer <JWT>` carrying `org` and the `payments:read` scope; "
            "every answer is scoped to the token's organization. Money is in integer minor units. "
            "Errors are RFC 9457 `application/problem+json`."
        ),
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),  # server spans when tracing (shared/tracing.py)
    )
    app.state.settings = settings
    if runtime is not None:
        app.state.runtime = runtime
    install_problem_handlers(app)
    app.add_middleware(Authenticate)

    async def check(name: str) -> None:
        await ops_checks(app.state.runtime)[name]()

    install_health_routes(app, {"mongodb": lambda: check("mongodb"), "redis": lambda: check("redis")})
    app.include_router(export_routes.router)  # before /v1/payments/{payment_id}
    app.include_router(router)
    return app
