"""The query API's routes: search, get by id (or as at a version), a payment's history,
statistics.

Thin: the organization comes from the token, parameters become typed queries
(:mod:`errors` maps what fails), the handlers answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from services.query.entrypoints.http.errors import query_problems, typed
from services.query.entrypoints.http.schemas import (
    COMMON_ERRORS,
    CONSISTENCY_ERRORS,
    DATE_SCHEMA,
    DATETIME_SCHEMA,
    PROBLEM,
    READ_WAIT_DEFAULT,
    ConsistentWith,
)
from services.query.handlers import QueryHandlers
from services.query.queries import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_LIMIT,
    MAX_HISTORY_LIMIT,
    MAX_LIMIT,
    MAX_PAGE,
    SORTS,
    HistoryQuery,
    PaymentHistory,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
)
from shared.auth import SCOPE_READ, Principal, require_scope
from shared.money import CURRENCY_SCHEMA, MAX_AMOUNT
from shared.payment import PAYMENT_ID_PATTERN, PaymentStatus
from shared.payment_view import Payment

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, Depends(require_scope(SCOPE_READ))]


def handlers(request: Request) -> QueryHandlers:
    return request.app.state.runtime.handlers


Handlers = Annotated[QueryHandlers, Depends(handlers)]


@router.get("/payments", response_model=SearchResult, tags=["payments"], summary="Search payments",
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
    query = typed(SearchQuery, status=status, currency=currency, min_amount=min_amount,
                  max_amount=max_amount, created_from=created_from, created_to=created_to,
                  user_id=user_id, sort=sort, limit=limit or size or DEFAULT_LIMIT,
                  starting_after=starting_after, page=page)
    with query_problems():
        return await h.search(principal.org, query, consistent_with or ())


@router.get(
    "/payments/{payment_id}", response_model=Payment, tags=["payments"], summary="Get a payment",
    responses={
        **COMMON_ERRORS,
        **CONSISTENCY_ERRORS,
        404: {"description": "No such payment in this organization (or deleted; with as_of_version: never "
                             "created), a version beyond the newest (`version-not-found`, with `versions`: "
                             "{first, last}), or a consistency token issued to another organization", **PROBLEM},
    },
)
async def get_payment(
    principal: Reader,
    h: Handlers,
    payment_id: Annotated[str, Path(pattern=PAYMENT_ID_PATTERN)],
    min_version: Annotated[int | None, Query(ge=1, description=(
        f"Read-your-writes: wait (at most PAYMENTS_READ_WAIT_SECONDS, {READ_WAIT_DEFAULT} by default) until the read "
        "model holds at least "
        "this version (the `version` a command returned)"))] = None,
    as_of_version: Annotated[int | None, Query(ge=1, description=(
        "The payment as it was at this version (from its history; a deleted payment's versions too). "
        "Beyond the newest version: 404 `version-not-found` naming the versions that exist"))] = None,
    consistent_with: ConsistentWith = None,
) -> Payment:
    """One payment of the token's organization; another organization's payment is a 404."""
    with query_problems():
        if as_of_version is not None:
            if min_version is not None:
                await h.wait_for(principal.org, {payment_id: min_version})
            return await h.get_as_of(principal.org, payment_id, as_of_version, consistent_with or ())
        return await h.get(principal.org, payment_id, min_version, consistent_with=consistent_with or ())


@router.get(
    "/payments/{payment_id}/history", response_model=PaymentHistory, tags=["payments"],
    summary="A payment's history",
    responses={
        **COMMON_ERRORS,
        **CONSISTENCY_ERRORS,
        404: {"description": "No such payment in this organization, or a consistency token issued to another "
                             "organization", **PROBLEM},
    },
)
async def payment_history(
    principal: Reader,
    h: Handlers,
    payment_id: Annotated[str, Path(pattern=PAYMENT_ID_PATTERN)],
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT, description="Versions per page")]
    = DEFAULT_HISTORY_LIMIT,
    starting_after: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$", description=(
        "next_cursor of the previous page, unchanged"))] = None,
    consistent_with: ConsistentWith = None,
) -> PaymentHistory:
    """Every version of the payment, oldest first: version, event type, time, actor,
    command id and the fields it changed (old and new values). Deleted payments keep their
    history. With `consistent_with`, the history includes those writes."""
    query = typed(HistoryQuery, payment_id=payment_id, limit=limit,
                  starting_after=int(starting_after) if starting_after is not None else None)
    with query_problems():
        return await h.history(principal.org, query, consistent_with or ())


@router.get("/statistics", response_model=Statistics, tags=["statistics"], summary="Payment statistics",
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
    query = typed(StatisticsQuery, created_from=created_from, created_to=created_to, currency=currency)
    with query_problems():
        return await h.statistics(principal.org, query, consistent_with or ())
