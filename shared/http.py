"""HTTP plumbing shared by both APIs: RFC 9457 problem+json errors, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://gyroscops.com/problems/"
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


def install_health_routes(app: FastAPI, checks: dict[str, ReadinessCheck]) -> None:
    """``/healthz`` (process alive), ``/readyz`` (every dependency answers), ``/metrics``."""

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: dependencies reachable")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": results},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        from shared.temporal import sdk_metrics_text  # lazy: only workers/clients have a runtime

        return Response(generate_latest() + sdk_metrics_text(), media_type=CONTENT_TYPE_LATEST)
