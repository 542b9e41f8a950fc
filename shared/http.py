"""HTTP plumbing shared by both APIs: RFC 9457 problem+json errors, health and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.tracing import untraced

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://gyroscops.com/problems/"
# Each readiness check is cut off after this long (and all run at once), so /readyz
# answers within the probes' timeoutSeconds (3 s in the chart) even while a server
# hangs instead of refusing connections.
READINESS_CHECK_TIMEOUT = 2.0
# The one Retry-After policy: how long a client is told to wait, by the problem (or the
# 202) that asks it to come back. Moments for what resolves by itself (a running command,
# a projection just behind); longer for a server away, longest for the identity provider.
RETRY_AFTER_SECONDS = {
    "command-running": 1,  # 202: poll the command's status URL
    "command-failed": 1,  # 503: the same request attaches to the command or runs it again
    "read-model-behind": 1,  # 409: the projection is moments behind the write
    "dependency-unavailable": 2,  # 503: a server the request needs is unreachable
    "jwks-unavailable": 5,  # 503: the identity provider's key set cannot be read
}


def retry_after(reason: str) -> dict[str, str]:
    """The Retry-After header of an answer that asks the client to come back (``reason``:
    a key of :data:`RETRY_AFTER_SECONDS`)."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS[reason])}
log = logging.getLogger("payments.http")


class ProblemError(Exception):
    """An error that becomes an RFC 9457 problem+json response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ if type_ == "about:blank" or "://" in type_ else PROBLEM_BASE + type_
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    status: int, title: str, detail: str, *, type_: str = "about:blank",
    instance: str | None = None, headers: dict[str, str] | None = None, **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def outage_classes() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "a server this request needs is unreachable right now"
    (connection refused or reset, a database restarting, no server selectable), as
    opposed to a bug: they become a 503 with Retry-After, never a 500."""
    import asyncpg
    from pymongo.errors import ConnectionFailure
    from redis.exceptions import ConnectionError as RedisConnectionError

    return (
        OSError,  # refused / reset / timed out (TimeoutError is an OSError)
        asyncpg.PostgresConnectionError,  # incl. the connection dying mid-request
        asyncpg.CannotConnectNowError,  # starting up or shutting down
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
        asyncpg.InternalClientError,  # protocol state broken by a connection lost mid-query
        ConnectionFailure,  # pymongo: AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError
        RedisConnectionError,
    )


def outage_response(request: Request, exc: BaseException) -> JSONResponse:
    log.warning("%s %s: a server is unreachable: %s: %s", request.method, request.url.path,
                type(exc).__name__, str(exc)[:300])
    return problem_response(
        503, "Service Unavailable",
        "a server this request needs is unreachable right now; retry later",
        type_=PROBLEM_BASE + "dependency-unavailable", instance=request.url.path,
        headers=retry_after("dependency-unavailable"),
    )


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.detail, type_=exc.type,
            instance=request.url.path, headers=exc.headers, **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        syntax = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if syntax is not None:  # not JSON at all: a 400, unlike valid JSON of the wrong shape (422)
            position = next((p for p in syntax.get("loc", ()) if isinstance(p, int)), None)
            reason = (syntax.get("ctx") or {}).get("error", "invalid JSON")
            where = f" at character {position}" if position is not None else ""
            return problem_response(
                400, "Bad Request", f"malformed JSON body{where}: {reason}",
                type_=PROBLEM_BASE + "malformed-json", instance=request.url.path,
            )
        errors = [
            {"field": _loc(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            422, "Unprocessable Content", detail or "invalid request",
            type_=PROBLEM_BASE + "validation-error", instance=request.url.path, errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, "HTTP error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(
            exc.status_code, title, str(exc.detail), instance=request.url.path, headers=headers,
        )

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        return outage_response(request, exc)

    # Registered per class: Starlette's ExceptionMiddleware answers them as 503s; anything
    # else reaches the Unexpected middleware below (one log line, a 500 problem).
    for cls in outage_classes():
        app.add_exception_handler(cls, _outage)

    from temporalio.service import RPCError, RPCStatusCode

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, exc: RPCError) -> JSONResponse:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return outage_response(request, exc)
        raise exc  # a bug, not an outage: the Unexpected middleware logs it once and answers 500

    app.add_middleware(Unexpected)


class Unexpected:
    """Any other error: logged once (through the process's log handler, so as JSON in
    production) and answered with a 500 problem. Unlike ``exception_handler(Exception)``,
    which re-raises to the server, nothing is logged a second time by uvicorn."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                response = problem_response(500, "Internal Server Error",
                                            "an unexpected error occurred; it has been logged", instance=scope["path"])
                await response(scope, receive, send)


def _allowed_methods(request: Request) -> list[str]:
    """Every method served at this path's template (FastAPI has one route per method, so
    Starlette's own Allow header names only the first route's). The template is the first
    that matches, as in routing: `/v1/payments/batch` is not `/v1/payments/{payment_id}`."""
    routes = [r for r in _flat(request.app.router.routes) if r.matches(request.scope)[0] is not Match.NONE]
    if not routes:
        return []
    template = getattr(routes[0], "path", None)
    return sorted({m for r in routes if getattr(r, "path", None) == template for m in getattr(r, "methods", None) or ()})


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Routes, with those of included routers (which carry their full paths) inlined."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from _flat(included.routes) if included is not None else (route,)


ReadinessCheck = Callable[[], Awaitable[None]]


# Servers whose loss degrades a process without stopping it: a Redis outage only makes
# queries slower (answered from MongoDB), so it never takes a pod out of its Service; an
# events topic that would lose events (issue 23) threatens a later rebuild from the topic,
# not the projection.
OPTIONAL_DEPENDENCIES = frozenset({"redis", "events_topic_retention"})


def install_health_routes(app: FastAPI, checks: dict[str, ReadinessCheck]) -> None:
    """``/healthz`` (process alive), ``/readyz`` (every required dependency answers;
    an optional one that fails makes the status ``degraded``, still 200), ``/metrics``."""

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def probe(check: ReadinessCheck) -> str:
        try:
            with untraced():  # a probe's database calls are no trace
                await asyncio.wait_for(check(), READINESS_CHECK_TIMEOUT)
            return "ok"
        except TimeoutError:
            return f"error: no answer within {READINESS_CHECK_TIMEOUT:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"error: {type(exc).__name__}: {exc}"[:300]

    @app.get("/readyz", tags=["operations"], summary="Readiness: dependencies reachable")
    async def readyz() -> JSONResponse:
        outcomes = await asyncio.gather(*(probe(check) for check in checks.values()))
        results = dict(zip(checks, outcomes, strict=True))
        failed = {name for name, outcome in results.items() if outcome != "ok"}
        ready = not failed - OPTIONAL_DEPENDENCIES
        status = "not ready" if not ready else "degraded" if failed else "ready"
        return JSONResponse({"status": status, "checks": results}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # OpenMetrics when the scraper accepts it (Prometheus does): the only format with
        # exemplars, which link a latency bucket to a trace (shared/tracing.py).
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=content_type)
