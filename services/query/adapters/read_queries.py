"""The read model's queries, pure: the MongoDB filter and sort of a search, the page it
answers, and the statistics filter and the folding of its buckets into the answer.
:class:`read_model.MongoReadModel` runs them; they are unit-tested without MongoDB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING

from services.query.adapters.cursors import encode_cursor
from services.query.domain import Tally, refunded_of_document
from services.query.queries import (
    CurrencyStatistics,
    DayFigures,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
    StatusFigures,
)
from shared.payment_view import Payment

# --------------------------------------------------------------------------- search


def search_filter(org: str, q: SearchQuery) -> dict[str, Any]:
    """The MongoDB filter for ``q`` inside organization ``org`` (no cursor)."""
    flt: dict[str, Any] = {"organization_id": org}
    if q.status is not None:
        flt["status"] = str(q.status)
    if q.currency is not None:
        flt["currency"] = q.currency
    if q.user_id is not None:
        flt["user_id"] = q.user_id
    amount = {k: v for k, v in (("$gte", q.min_amount), ("$lte", q.max_amount)) if v is not None}
    if amount:
        flt["amount"] = amount
    created = {k: v.astimezone(UTC) for k, v in (("$gte", q.created_from), ("$lt", q.created_to)) if v is not None}
    if created:
        flt["created_at"] = created
    return flt


def sort_spec(q: SearchQuery) -> list[tuple[str, int]]:
    direction = DESCENDING if q.descending else ASCENDING
    return [(q.sort_field, direction), ("_id", direction)]


def keyset_filter(q: SearchQuery, after: tuple[Any, str]) -> dict[str, Any]:
    """Documents strictly after ``after`` in the order of ``sort_spec(q)``."""
    value, pid = after
    op = "$lt" if q.descending else "$gt"
    return {"$or": [{q.sort_field: {op: value}}, {q.sort_field: value, "_id": {op: pid}}]}


def payment_of(doc: Mapping[str, Any]) -> Payment:
    """The representation of a live payment's read-model document."""
    return Payment(
        id=doc["id"], organization_id=doc["organization_id"], user_id=doc.get("user_id"),
        amount=doc["amount"], currency=doc["currency"], status=doc["status"],
        description=doc.get("description", ""), metadata=doc.get("metadata") or {},
        version=doc["version"], created_at=doc["created_at"], updated_at=doc["updated_at"],
        expires_at=doc.get("expires_at"),
        amount_refunded=refunded_of_document(doc), refunds=doc.get("refunds") or [],
    )


def page_result(key: bytes, org: str, q: SearchQuery, docs: list[dict[str, Any]], total: int) -> SearchResult:
    """``docs`` were fetched with ``limit + 1`` to learn whether more follow."""
    has_more = len(docs) > q.limit
    docs = docs[: q.limit]
    return SearchResult(
        data=[payment_of(d) for d in docs],
        total=total,
        has_more=has_more,
        next_cursor=encode_cursor(key, org, q, docs[-1]) if has_more and docs else None,
        limit=q.limit,
        page=q.page if q.starting_after is None else None,
    )


# --------------------------------------------------------------------------- statistics


def statistics_filter(org: str, q: StatisticsQuery) -> dict[str, Any]:
    flt: dict[str, Any] = {"organization_id": org}
    days = {k: v.isoformat() for k, v in (("$gte", q.created_from), ("$lte", q.created_to)) if v is not None}
    if days:
        flt["day"] = days
    if q.currency is not None:
        flt["currency"] = q.currency
    return flt


def average(total: int, count: int) -> int:
    """sum / count rounded half-even to whole minor units (exact integer arithmetic)."""
    return int((Decimal(total) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def amount_figures(tally: Tally) -> dict[str, int]:
    """A non-empty tally as the answer's figures (``avg`` and ``net`` added)."""
    return {**tally.fields(), "avg": average(tally.sum, tally.count), "net": tally.sum - tally.refunded}


def summarize(q: StatisticsQuery, buckets: Iterable[Mapping[str, Any]]) -> Statistics:
    """Fold statistics buckets into the response: per currency, by status, by day."""
    per_currency: dict[str, Tally] = defaultdict(Tally)
    per_status: dict[tuple[str, str], Tally] = defaultdict(Tally)
    per_day: dict[tuple[str, str], Tally] = defaultdict(Tally)
    status_counts: dict[str, int] = defaultdict(int)
    for b in buckets:
        if b["count"] <= 0:
            continue
        tally = Tally.of_bucket(b)
        per_currency[b["currency"]].merge(tally)
        per_status[(b["currency"], b["status"])].merge(tally)
        per_day[(b["currency"], b["day"])].merge(tally)
        status_counts[b["status"]] += b["count"]
    currencies = [
        CurrencyStatistics(
            currency=cur, **amount_figures(acc),
            by_status=[StatusFigures(status=s, **amount_figures(a)) for (c, s), a in sorted(per_status.items()) if c == cur],
            by_day=[DayFigures(day=date.fromisoformat(d), **amount_figures(a))
                    for (c, d), a in sorted(per_day.items()) if c == cur],
        )
        for cur, acc in sorted(per_currency.items())
    ]
    return Statistics(
        created_from=q.created_from, created_to=q.created_to,
        count=sum(status_counts.values()), by_status=dict(sorted(status_counts.items())),
        currencies=currencies,
    )
