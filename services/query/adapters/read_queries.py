"""The read model's queries, pure: the MongoDB filter and sort of a search, the page it
answers, and the statistics filter and the folding of its buckets into the answer.
:class:`read_model.MongoReadModel` runs them; they are unit-tested without MongoDB.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING

from services.query.adapters.cursors import encode_cursor
from services.query.domain import Tally, document_id, metadata_entry, refunded_of_document
from services.query.queries import (
    CurrencyStatistics,
    DayFigures,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
    StatusFigures,
)
from services.query.search_language import Clause, Expression, Op, day_range
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
    amount = {k: v for k, v in (("$gte", q.min_amount),) if v is not None}
    if q.max_amount is not None:
        amount |= at_most(q.max_amount)
    if amount:
        flt["amount"] = amount
    created = {k: v.astimezone(UTC) for k, v in (("$gte", q.created_from), ("$lt", q.created_to)) if v is not None}
    if created:
        flt["created_at"] = created
    if q.expression is not None:
        # Top-level fields AND with the organization (no language field is organization_id,
        # so no query text can widen the tenant filter); a field both sides constrain, in $and.
        for field, condition in expression_filter(org, q.expression).items():
            assert field != "organization_id"
            if field in flt:
                flt.setdefault("$and", []).append({field: condition})
            else:
                flt[field] = condition
    return flt


_COMPARISONS = {Op.GT: "$gt", Op.GE: "$gte", Op.LT: "$lt", Op.LE: "$lte"}
# Document field of each language field (id and metadata are translated on their own).
_DOCUMENT_FIELDS = {"status": "status", "currency": "currency", "amount": "amount", "created": "created_at",
                    "user_id": "user_id", "description": "description"}


def expression_filter(org: str, expr: Expression) -> dict[str, Any]:
    """The MongoDB filter of a search-language expression of organization ``org``. An AND
    is one condition per field where it can be (a field's comparisons merged), so the
    filter stays plain fields an index lookup takes (SecantusDB plans no index for a
    top-level ``$and``); an OR is ``$or``."""
    parts = [clause_filter(org, c) for c in expr.clauses]
    if expr.any and len(parts) > 1:
        return {"$or": [{f: cond} for f, cond in parts]}
    by_field: dict[str, list[Any]] = {}
    for f, cond in parts:
        by_field.setdefault(f, []).append(cond)
    flt: dict[str, Any] = {}
    for f, conds in by_field.items():
        merged = _merged(conds)
        if merged is not None:
            flt[f] = merged
        else:
            flt.setdefault("$and", []).extend({f: c} for c in conds)
    return flt


def _merged(conds: list[Any]) -> Any:
    """One condition equivalent to all of ``conds`` on a field, or None when their
    operators collide."""
    if len(conds) == 1:
        return conds[0]
    merged: dict[str, Any] = {}
    for c in conds:
        ops = c if isinstance(c, dict) else {"$eq": c}
        if merged.keys() & ops.keys():
            return None
        merged |= ops
    return merged


def clause_filter(org: str, c: Clause) -> tuple[str, Any]:
    """One clause as (document field, condition). Negation is the field's ``$ne`` /
    ``$not``: true where the condition is not, a missing field included (only ``user_id``
    can be missing, and a missing user id differs from any value, as in Python)."""
    field, cond = _positive(org, c)
    if not c.negated:
        return field, cond
    return field, {"$not": cond} if isinstance(cond, dict) else {"$ne": cond}


def _positive(org: str, c: Clause) -> tuple[str, Any]:
    if c.field == "id":
        return "_id", document_id(org, str(c.value))
    if c.field == "metadata":
        assert c.key is not None
        return "metadata_kv", metadata_entry(c.key, c.value)
    field = _DOCUMENT_FIELDS[c.field]
    if c.op is Op.CONTAINS:  # user text: matched literally, never as a pattern
        return field, {"$regex": re.escape(str(c.value))}
    value = c.value
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
    elif isinstance(value, date):  # a whole UTC day
        start, end = day_range(value)
        return field, {Op.EQ: {"$gte": start, "$lt": end}, Op.GT: {"$gte": end}, Op.GE: {"$gte": start},
                       Op.LT: {"$lt": start}, Op.LE: {"$lt": end}}[c.op]
    if c.op is Op.LE:
        return field, at_most(value)
    return field, value if c.op is Op.EQ else {_COMPARISONS[c.op]: value}


def at_most(value: Any) -> dict[str, Any]:
    """``<= value`` as ``< the next value`` (whole minor units; BSON datetimes are whole
    milliseconds): the same documents, and SecantusDB's own index lookup drops the bound
    itself from an inclusive upper bound on a compound index's inner field (it answered
    ``created <= T`` without the payment created at T)."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        try:
            return {"$lt": moment + timedelta(milliseconds=1)}
        except OverflowError:  # the last millisecond of year 9999: nothing lies after it
            return {"$lte": moment}
    return {"$lt": value + 1}


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
        next_cursor=encode_cursor(key, org, q, docs[-1], total) if has_more and docs else None,
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
