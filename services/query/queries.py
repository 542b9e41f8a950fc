"""The query side's language: typed queries and their answers, shared by HTTP, the
handlers and Temporal (whose query workflows take one of the ``*Input`` below each)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.money import MAX_AMOUNT, CurrencyCode
from shared.payment import AwareDatetime, PaymentStatus
from shared.payment_view import EXAMPLE_PAYMENT, Payment

SORT_FIELDS = ("created_at", "amount", "status")
SORTS = tuple(p + f for f in SORT_FIELDS for p in ("", "-"))
# Timestamps and days as query strings: RFC 3339 text only (never a number of seconds).
RFC3339_DATETIME = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
RFC3339_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _rfc3339(pattern: str, value: Any) -> Any:
    if (isinstance(value, str) and not re.match(pattern, value)) or isinstance(value, int | float):
        raise ValueError("expected an RFC 3339 " + ("date" if pattern == RFC3339_DATE else "timestamp")
                         + ", e.g. 2026-03-01" + ("" if pattern == RFC3339_DATE else "T00:00:00Z"))
    return value
MAX_LIMIT = 100
# Offset pagination stops at 10 000 pages (1 M rows skipped at most): deeper, use cursors.
MAX_PAGE = 10_000
DEFAULT_LIMIT = 20


class SearchQuery(BaseModel):
    """Filters, sort and pagination of a payment search (organization comes from the caller).
    An empty range (min above max, from after to) is a valid search that matches nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: PaymentStatus | None = None
    currency: CurrencyCode | None = Field(default=None, examples=["EUR"])
    min_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT, description="Minor units, inclusive")
    max_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT, description="Minor units, inclusive")
    created_from: AwareDatetime | None = Field(default=None, description="Inclusive, RFC 3339")
    created_to: AwareDatetime | None = Field(default=None, description="Exclusive, RFC 3339")
    user_id: str | None = None
    sort: str = Field(default="-created_at", description="created_at | amount | status; '-' for descending")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    starting_after: str | None = Field(default=None, description="next_cursor of the previous page")
    page: int | None = Field(default=None, ge=1, le=MAX_PAGE,
                             description="Page number (seed style); ignored with a cursor")

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str) -> str:
        if v.removeprefix("-") not in SORT_FIELDS:
            raise ValueError(f"sort must be one of {', '.join(SORT_FIELDS)}, optionally prefixed with '-'")
        return v

    @field_validator("created_from", "created_to", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _rfc3339(RFC3339_DATETIME, v)

    @field_validator("created_from", "created_to")
    @classmethod
    def _in_utc_range(cls, v: datetime | None) -> datetime | None:
        if v is not None:
            try:
                v.astimezone(UTC)  # the filter is in UTC: the instant must exist there
            except OverflowError:
                raise ValueError("timestamps must lie between years 0001 and 9999 in UTC") from None
        return v

    @property
    def sort_field(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")


class SearchResult(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"data": [EXAMPLE_PAYMENT], "total": 1, "has_more": False, "next_cursor": None,
                          "limit": 20, "page": None}]
        }
    )

    data: list[Payment]
    total: int = Field(description="Payments matching the filters (all pages)")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after to get the next page")
    limit: int
    page: int | None = None


class StatisticsQuery(BaseModel):
    """Whole UTC days, both ends inclusive; omitted ends are open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    created_from: date | None = None
    created_to: date | None = None
    currency: CurrencyCode | None = None

    @field_validator("created_from", "created_to", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _rfc3339(RFC3339_DATE, v)


class Figures(BaseModel):
    """count, sum, avg, min, max of amounts in minor units. ``avg`` is sum/count rounded
    half-even to an integer number of minor units."""

    count: int
    sum: int
    avg: int
    min: int
    max: int
    refunded: int = Field(default=0, description="Minor units refunded of these payments (their amount_refunded)")
    net: int = Field(default=0, description="sum - refunded")


class StatusFigures(Figures):
    status: PaymentStatus


class DayFigures(Figures):
    day: date


class CurrencyStatistics(Figures):
    currency: str
    by_status: list[StatusFigures]
    by_day: list[DayFigures]


class Statistics(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{
                "created_from": "2026-03-01", "created_to": "2026-03-31", "count": 2,
                "by_status": {"partially_refunded": 1, "processing": 1},
                "currencies": [{
                    "currency": "EUR", "count": 2, "sum": 3000, "avg": 1500, "min": 1000, "max": 2000,
                    "refunded": 250, "net": 2750,
                    "by_status": [
                        {"status": "partially_refunded", "count": 1, "sum": 1000, "avg": 1000, "min": 1000,
                         "max": 1000, "refunded": 250, "net": 750},
                        {"status": "processing", "count": 1, "sum": 2000, "avg": 2000, "min": 2000, "max": 2000,
                         "refunded": 0, "net": 2000},
                    ],
                    "by_day": [{"day": "2026-03-01", "count": 2, "sum": 3000, "avg": 1500, "min": 1000, "max": 2000,
                                "refunded": 250, "net": 2750}],
                }],
            }]
        }
    )

    created_from: date | None
    created_to: date | None
    count: int = Field(description="Payments in the range, all currencies")
    by_status: dict[str, int] = Field(description="Payment count per status, all currencies")
    currencies: list[CurrencyStatistics] = Field(description="Money figures per currency (never summed across)")


# Versions of one payment's history per page.
MAX_HISTORY_LIMIT = 100
DEFAULT_HISTORY_LIMIT = 50


class HistoryQuery(BaseModel):
    """One page of a payment's history, oldest first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payment_id: str
    starting_after: int | None = Field(default=None, ge=0, description="next_cursor of the previous page")
    limit: int = Field(default=DEFAULT_HISTORY_LIMIT, ge=1, le=MAX_HISTORY_LIMIT)


class HistoryEntry(BaseModel):
    version: int
    event_type: str = Field(description="created | updated | status_changed | deleted | ...", examples=["updated"])
    event_id: str
    time: datetime = Field(description="When the event happened (the CloudEvent `time`)")
    actor: str = Field(description="Who caused it: a token's `sub`, a Kafka producer's `source`, `system:<what>`; "
                                   "`unknown` for events produced before actors were recorded")
    command_id: str | None = Field(description="The command that caused it (GET /v1/commands/{id})")
    changes: dict[str, dict[str, Any]] | None = Field(description=(
        "Fields this version changed: {field: {old, new}} (JSON values); version 1 lists what it set. "
        "`version` and `updated_at` change every time and are not listed. null only while the version before "
        "is missing from the read model (reconcile --repair fills it)"))


class PaymentHistory(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "payment_id": "pay_01J9Z3", "has_more": False, "next_cursor": None, "data": [
            {"version": 1, "event_type": "created", "event_id": "8b0c1c52-53f3-4d5e-9f0e-2f1f7a4c9e01",
             "time": "2026-03-01T10:00:00Z", "actor": "user_42", "command_id": "cmd-1",
             "changes": {"amount": {"old": None, "new": 1250}, "amount_refunded": {"old": None, "new": 0},
                         "created_at": {"old": None, "new": "2026-03-01T10:00:00Z"},
                         "currency": {"old": None, "new": "EUR"},
                         "description": {"old": None, "new": "Cloud resources, March"},
                         "id": {"old": None, "new": "pay_01J9Z3"}, "metadata": {"old": None, "new": {}},
                         "organization_id": {"old": None, "new": "org_acme"}, "refunds": {"old": None, "new": []},
                         "status": {"old": None, "new": "processing"}, "user_id": {"old": None, "new": "user_42"}}},
            {"version": 2, "event_type": "status_changed", "event_id": "0f7a0d9e-7d43-4a59-a7f4-5a0c3e1b2d77",
             "time": "2026-03-01T10:00:05Z", "actor": "system:psp", "command_id": "cmd-2",
             "changes": {"status": {"old": "processing", "new": "completed"}}},
        ]}]})

    payment_id: str
    data: list[HistoryEntry] = Field(description="Versions in order, oldest first")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after to get the next versions")


# --------------------------------------------------------------------------- Temporal inputs


class ReadInput(BaseModel):
    organization_id: str
    consistent_with: list[str] = Field(default_factory=list, description="Consistency tokens to reflect")


class SearchInput(ReadInput):
    query: SearchQuery


class GetInput(ReadInput):
    payment_id: str


class StatisticsInput(ReadInput):
    query: StatisticsQuery


class HistoryInput(ReadInput):
    query: HistoryQuery
