"""The query HTTP API (FastAPI, default port 8002): DESIGN section 5, query service.

Thin: authenticate, turn parameters into typed queries, call the handlers, map domain
errors to problem+json. The organization always comes from the token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi_offline import FastAPIOffline
from pydantic import StringConstraints, ValidationError
from pymongo.errors import PyMongoError

from services.query.adapters.read_model import InvalidCursor
from services.query.bootstrap import QueryContext, build
from services.query.handlers import NotCaughtUp, PaymentNotFound, QueryHandlers
from services.query.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_PAGE,
    RFC3339_DATE,
    RFC3339_DATETIME,
    SORTS,
    PaymentView,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
)
from shared.auth import SCOPE_READ, Authenticate, Principal, require_scope
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken
from shared.http import PROBLEM_CONTENT_TYPE, ProblemError, install_health_routes, install_problem_handlers
from shared.money import CURRENCY_SCHEMA, MAX_AMOUNT
from shared.payment import PaymentStatus
from shared.settings import Settings, get_settings

log = logging.getLogger("payments.query.api")
# Typed as text and parsed by the query models, which accept RFC 3339 only (FastAPI's own
# parsing would also take a number of seconds, which the document does not allow).
DATETIME_SCHEMA = {"format": "date-time", "pattern": RFC3339_DATETIME}
DATE_SCHEMA = {"format": "date", "pattern": RFC3339_DATE}
PROBLEM = {"content": {PROBLEM_CONTENT_TYPE: {"schema": {"type": "object"}}}}
COMMON_ERRORS = {
    401: {"description": "Missing or invalid bearer token", **PROBLEM},
    403: {"description": "The token lacks the payments:read scope", **PROBLEM},
    422: {"description": "Invalid parameters", **PROBLEM},
}

Reader = Annotated[Principal, Depends(require_scope(SCOPE_READ))]
# The shape of a token (shared/consistency.py); whether it is genuine only the server can tell (400).
# In a URL: at most 3 tokens of 4 KiB (about 130 payments each), so the request line stays
# inside what HTTP servers read (uvicorn: 16 KiB).
MAX_URL_TOKEN_CHARS = 4096
MAX_URL_TOKENS = 3
ConsistencyToken = Annotated[str, StringConstraints(pattern=r"^ct1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                                                     max_length=MAX_URL_TOKEN_CHARS)]
ConsistentWith = Annotated[list[ConsistencyToken] | None, Query(max_length=MAX_URL_TOKENS, description=(
    "Read-your-writes: the `Consistency-Token` of one or more command results (repeat the parameter for "
    f"several, at most {MAX_URL_TOKENS} of {MAX_URL_TOKEN_CHARS} characters). The answer waits (at most "
    "PAYMENTS_READ_WAIT_SECONDS, 5 s by default) until the read model reflects every write they name, "
    "else 409 `read-model-behind` with `Retry-After`. A malformed or altered token is a 400; a token "
    "issued to another organization is a 404 that reveals nothing about it."))]
CONSISTENCY_ERRORS = {
    400: {"description": "consistent_with is not a consistency token of this deployment", **PROBLEM},
    404: {"description": "A consistency token issued to another organization", **PROBLEM},
    409: {"description": "consistent_with / min_version not reached by the read model within the wait bound",
          **PROBLEM},
}


def handlers(request: Request) -> QueryHandlers:
    return request.app.state.ctx.handlers


Handlers = Annotated[QueryHandlers, Depends(handlers)]


def _typed(model, **values):  # type: ignore[no-untyped-def]
    """Build a query model; its validation errors become a 422 problem."""
    try:
        return model(**values)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])) or "query", "message": e["msg"]} for e in exc.errors()]
        raise ProblemError(422, "Unprocessable Content", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                           type_="validation-error", errors=errors) from None


@contextmanager
def _consistency_problems() -> Iterator[None]:
    """Consistency-token and wait outcomes as problems (the one mapping for every route)."""
    try:
        yield
    except InvalidConsistencyToken as exc:
        raise ProblemError(400, "Bad Request", str(exc), type_="invalid-consistency-token",
                           errors=[{"field": "consistent_with", "message": str(exc)}]) from None
    except ForeignConsistencyToken as exc:
        raise ProblemError(404, "Not Found", str(exc), type_="consistency-token-not-found") from None
    except NotCaughtUp as exc:
        raise ProblemError(409, "Read model behind", str(exc), type_="read-model-behind",
                           headers={"Retry-After": "1"}, wanted_version=exc.wanted, projected_version=exc.seen,
                           behind=[{"payment_id": p, "wanted_version": w, "projected_version": v}
                                   for p, w, v in exc.behind]) from None


def create_app(settings: Settings | None = None, ctx: QueryContext | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ctx is None
        app.state.ctx = ctx or build(settings)
        try:
            # Searches hint at these indexes: a query API that starts before any projector
            # (a fresh database) must not answer 500 for want of them.
            await app.state.ctx.read_model.ensure_indexes()
        except PyMongoError as exc:  # MongoDB away: /readyz says so; the projector creates them too
            log.warning("could not ensure the read model's indexes: %s", exc)
        try:
            yield
        finally:
            if owned:
                await app.state.ctx.close()

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
    )
    app.state.settings = settings
    install_problem_handlers(app)
    app.add_middleware(Authenticate)
    install_health_routes(app, {
        "mongodb": lambda: app.state.ctx.check_mongo(),
        "redis": lambda: app.state.ctx.check_redis(),
    })

    @app.get("/v1/payments", response_model=SearchResult, tags=["payments"], summary="Search payments",
             responses={**COMMON_ERRORS, **CONSISTENCY_ERRORS,
                        400: {"description": "starting_after is not a cursor of this search, or consistent_with "
                                             "is not a consistency token", **PROBLEM}})
    async def search_payments(
        principal: Reader,
        h: Handlers,
        status: Annotated[PaymentStatus | None, Query(description="Exact status")] = None,
        currency: Annotated[str | None, Query(description="ISO 4217 code", examples=["EUR"],
                                              json_schema_extra=CURRENCY_SCHEMA)] = None,
        min_amount: Annotated[int | None, Query(ge=0, le=MAX_AMOUNT, description="Minor units, inclusive")] = None,
        max_amount: Annotated[int | None, Query(ge=0, le=MAX_AMOUNT, description="Minor units, inclusive")] = None,
        created_from: Annotated[str | None, Query(description="Inclusive, RFC 3339", examples=["2026-03-01T00:00:00Z"],
                                                  json_schema_extra=DATETIME_SCHEMA)] = None,
        created_to: Annotated[str | None, Query(description="Exclusive, RFC 3339",
                                                json_schema_extra=DATETIME_SCHEMA)] = None,
        user_id: Annotated[str | None, Query(description="Payments of this user")] = None,
        sort: Annotated[str, Query(description="created_at | amount | status, '-' prefix for descending",
                                   examples=["-created_at", "amount"], json_schema_extra={"enum": list(SORTS)})]
        = "-created_at",
        limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="Page size")] = None,
        size: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="Seed alias of limit")] = None,
        starting_after: Annotated[str | None, Query(description=(
            "next_cursor of the previous page, unchanged, with the same sort and filters (opaque and "
            "signed: any other value is a 400 invalid-cursor)"))] = None,
        page: Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Page number (offset pagination)")] = None,
        consistent_with: ConsistentWith = None,
    ) -> SearchResult:
        """Filter, sort and paginate the organization's payments. Prefer cursor pagination
        (`starting_after` = the previous `next_cursor`, keyset over (sort field, id)); `page`
        with `limit`/`size` is offset pagination and is ignored when a cursor is given.
        With `consistent_with`, the answer reflects those writes (served from the cache only
        when the cached answer provably does)."""
        query = _typed(SearchQuery, status=status, currency=currency, min_amount=min_amount,
                       max_amount=max_amount, created_from=created_from, created_to=created_to,
                       user_id=user_id, sort=sort, limit=limit or size or DEFAULT_LIMIT,
                       starting_after=starting_after, page=page)
        try:
            with _consistency_problems():
                return await h.search(principal.org, query, consistent_with or ())
        except InvalidCursor as exc:
            raise ProblemError(400, "Bad Request", str(exc), type_="invalid-cursor") from None

    @app.get(
        "/v1/payments/{payment_id}", response_model=PaymentView, tags=["payments"], summary="Get a payment",
        responses={
            **COMMON_ERRORS,
            **CONSISTENCY_ERRORS,
            404: {"description": "No such payment in this organization (or deleted), or a consistency token "
                                 "issued to another organization", **PROBLEM},
        },
    )
    async def get_payment(
        principal: Reader,
        h: Handlers,
        payment_id: Annotated[str, Path(min_length=1, max_length=128)],
        min_version: Annotated[int | None, Query(ge=1, description=(
            "Read-your-writes: wait (at most PAYMENTS_READ_WAIT_SECONDS, 5 s by default) until the read "
            "model holds at least "
            "this version (the `version` a command returned)"))] = None,
        consistent_with: ConsistentWith = None,
    ) -> PaymentView:
        """One payment of the token's organization; another organization's payment is a 404."""
        try:
            with _consistency_problems():
                return await h.get(principal.org, payment_id, min_version, consistent_with=consistent_with or ())
        except PaymentNotFound:
            raise ProblemError(404, "Not Found", f"payment {payment_id!r} not found", type_="payment-not-found") \
                from None

    @app.get("/v1/statistics", response_model=Statistics, tags=["statistics"], summary="Payment statistics",
             responses={**COMMON_ERRORS, **CONSISTENCY_ERRORS})
    async def statistics(
        principal: Reader,
        h: Handlers,
        created_from: Annotated[str | None, Query(description="First UTC day, inclusive", examples=["2026-03-01"],
                                                  json_schema_extra=DATE_SCHEMA)] = None,
        created_to: Annotated[str | None, Query(description="Last UTC day, inclusive",
                                                json_schema_extra=DATE_SCHEMA)] = None,
        currency: Annotated[str | None, Query(description="Only this currency (ISO 4217 code)",
                                              json_schema_extra=CURRENCY_SCHEMA)] = None,
        consistent_with: ConsistentWith = None,
    ) -> Statistics:
        """count, sum, avg, min, max per currency, by status and by UTC day of creation, read
        from incrementally maintained aggregates (cost grows with days × currencies × statuses,
        not with the number of payments). Amounts are minor units; `avg` is rounded half-even.
        With `consistent_with`, the figures include those writes."""
        query = _typed(StatisticsQuery, created_from=created_from, created_to=created_to, currency=currency)
        with _consistency_problems():
            return await h.statistics(principal.org, query, consistent_with or ())

    return app
