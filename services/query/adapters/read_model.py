"""The MongoDB read model: collections, indexes, and query building.

Collections (one set per *generation*, so ``payments replay`` can build a fresh set and
switch to it atomically by updating one pointer document):

* ``payments_<gen>``: live payments (``_id`` = organization + payment id, as payment ids
  are per organization), one document per payment;
* ``tombstones_<gen>``: deleted payments (``_id``, ``version``): keep an older replayed
  event from resurrecting them;
* ``statistics_<gen>``: one document per organization × UTC day × currency × status with
  ``count``, ``sum``, ``min``, ``max``;
* ``read_model_meta``: ``{_id: "active", generation: <gen>}``, the pointer.

The query-building functions at the top are pure (unit-tested); :class:`ReadModel` runs
them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.query.domain import document_id
from services.query.queries import (
    CurrencyStatistics,
    DayFigures,
    PaymentView,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
    StatusFigures,
)

META = "read_model_meta"
DEFAULT_GENERATION = "g0"
CURSOR_PREFIX = "c2."


class InvalidCursor(ValueError):
    pass


# --------------------------------------------------------------------------- pure: search


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


def _binding(org: str, q: SearchQuery) -> str:
    """What a cursor is bound to: the organization, the sort and every filter (not the
    page size, which may change between pages)."""
    search = q.model_dump(mode="json", exclude={"starting_after", "page", "limit"})
    return hashlib.sha256(json.dumps([org, search], sort_keys=True).encode()).hexdigest()[:32]


def _signature(key: bytes, body: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()[:24]).decode()


def encode_cursor(key: bytes, org: str, q: SearchQuery, doc: Mapping[str, Any]) -> str:
    """An opaque cursor: the last item's (sort value, ``_id``) and the search it belongs
    to, signed with ``key`` so a client can neither forge nor alter one."""
    value = doc[q.sort_field]
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    raw = json.dumps([_binding(org, q), value, doc["_id"]], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{CURSOR_PREFIX}{body}.{_signature(key, body.encode())}"


# The type each sort field's value has in a cursor (a datetime travels as ISO text).
_CURSOR_VALUE_TYPES: dict[str, type] = {"created_at": str, "amount": int, "status": str}


def decode_cursor(key: bytes, org: str, q: SearchQuery, cursor: str) -> tuple[Any, str]:
    """``(sort value, _id)`` of the last item of the previous page of this same search."""
    body, _, signature = cursor.removeprefix(CURSOR_PREFIX).partition(".")
    if not cursor.startswith(CURSOR_PREFIX) or not hmac.compare_digest(
            signature.encode(), _signature(key, body.encode()).encode()):
        raise InvalidCursor("starting_after must be the next_cursor of a previous page, unchanged")
    try:
        binding, value, pid = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        raise InvalidCursor("starting_after is not a valid cursor") from None
    if binding != _binding(org, q):
        raise InvalidCursor("the cursor belongs to another search: keep the sort and filters of the "
                            "request that returned it")
    if not isinstance(value, _CURSOR_VALUE_TYPES[q.sort_field]) or isinstance(value, bool) or not isinstance(pid, str):
        raise InvalidCursor("starting_after is not a valid cursor")  # only a leaked key could get here
    if q.sort_field == "created_at":
        value = datetime.fromisoformat(value)
    return value, pid


def keyset_filter(q: SearchQuery, after: tuple[Any, str]) -> dict[str, Any]:
    """Documents strictly after ``after`` in the order of ``sort_spec(q)``."""
    value, pid = after
    op = "$lt" if q.descending else "$gt"
    return {"$or": [{q.sort_field: {op: value}}, {q.sort_field: value, "_id": {op: pid}}]}


def payment_of(doc: Mapping[str, Any]) -> PaymentView:
    """The representation of a live payment's read-model document."""
    return PaymentView(
        id=doc["id"], organization_id=doc["organization_id"], user_id=doc.get("user_id"),
        amount=doc["amount"], currency=doc["currency"], status=doc["status"],
        description=doc.get("description", ""), metadata=doc.get("metadata") or {},
        version=doc["version"], created_at=doc["created_at"], updated_at=doc["updated_at"],
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


# --------------------------------------------------------------------------- pure: statistics


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


@dataclass(slots=True)
class _Acc:
    count: int = 0
    sum: int = 0
    min: int | None = None
    max: int | None = None

    def add(self, bucket: Mapping[str, Any]) -> None:
        self.count += bucket["count"]
        self.sum += bucket["sum"]
        self.min = bucket["min"] if self.min is None else min(self.min, bucket["min"])
        self.max = bucket["max"] if self.max is None else max(self.max, bucket["max"])

    def figures(self) -> dict[str, int]:
        assert self.min is not None and self.max is not None
        return {"count": self.count, "sum": self.sum, "avg": average(self.sum, self.count),
                "min": self.min, "max": self.max}


def summarize(q: StatisticsQuery, buckets: Iterable[Mapping[str, Any]]) -> Statistics:
    """Fold statistics buckets into the response: per currency, by status, by day."""
    per_currency: dict[str, _Acc] = defaultdict(_Acc)
    per_status: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    per_day: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    status_counts: dict[str, int] = defaultdict(int)
    for b in buckets:
        if b["count"] <= 0:
            continue
        per_currency[b["currency"]].add(b)
        per_status[(b["currency"], b["status"])].add(b)
        per_day[(b["currency"], b["day"])].add(b)
        status_counts[b["status"]] += b["count"]
    currencies = [
        CurrencyStatistics(
            currency=cur, **acc.figures(),
            by_status=[StatusFigures(status=s, **a.figures()) for (c, s), a in sorted(per_status.items()) if c == cur],
            by_day=[DayFigures(day=date.fromisoformat(d), **a.figures())
                    for (c, d), a in sorted(per_day.items()) if c == cur],
        )
        for cur, acc in sorted(per_currency.items())
    ]
    return Statistics(
        created_from=q.created_from, created_to=q.created_to,
        count=sum(status_counts.values()), by_status=dict(sorted(status_counts.items())),
        currencies=currencies,
    )


# --------------------------------------------------------------------------- adapter

PAYMENT_INDEXES = [
    IndexModel([("organization_id", 1), ("created_at", 1), ("_id", 1)], name="org_created"),
    IndexModel([("organization_id", 1), ("amount", 1), ("_id", 1)], name="org_amount"),
    IndexModel([("organization_id", 1), ("status", 1), ("created_at", 1), ("_id", 1)], name="org_status_created"),
    IndexModel([("organization_id", 1), ("status", 1), ("_id", 1)], name="org_status"),
    IndexModel([("organization_id", 1), ("currency", 1), ("created_at", 1), ("_id", 1)], name="org_currency_created"),
    IndexModel([("organization_id", 1), ("user_id", 1), ("created_at", 1), ("_id", 1)], name="org_user_created"),
    # statistics: members of one bucket by amount (min/max recomputation)
    IndexModel([("organization_id", 1), ("day", 1), ("currency", 1), ("status", 1), ("amount", 1)], name="bucket_amount"),
]
STATISTICS_INDEXES = [IndexModel([("organization_id", 1), ("day", 1)], name="org_day")]
TOMBSTONE_INDEXES = [IndexModel([("organization_id", 1)], name="org")]


def choose_index(flt: Mapping[str, Any], sort_field: str) -> str:
    """The index that serves this filter and sort best (used as a hint)."""
    if sort_field == "amount":
        return "org_amount"
    if sort_field == "status":
        return "org_status"
    for field, name in (("status", "org_status_created"), ("user_id", "org_user_created"),
                        ("currency", "org_currency_created")):
        if field in flt:
            return name
    return "org_created"


@dataclass(frozen=True)
class Collections:
    generation: str
    payments: Any
    tombstones: Any
    statistics: Any


class ReadModel:
    """The collections of the active generation, and the queries on them."""

    POINTER_TTL = 1.0  # seconds a reader trusts its copy of the active-generation pointer

    def __init__(self, db: Any, cursor_key: bytes) -> None:
        self.db = db
        self.cursor_key = cursor_key  # signs search cursors (shared.auth.cursor_key)
        self._active: tuple[float, Collections] | None = None

    def collections(self, generation: str) -> Collections:
        return Collections(
            generation,
            self.db[f"payments_{generation}"],
            self.db[f"tombstones_{generation}"],
            self.db[f"statistics_{generation}"],
        )

    async def active_generation(self) -> str:
        doc = await self.db[META].find_one({"_id": "active"})
        return doc["generation"] if doc else DEFAULT_GENERATION

    async def active(self, *, fresh: bool = False) -> Collections:
        now = time.monotonic()
        if not fresh and self._active and now - self._active[0] < self.POINTER_TTL:
            return self._active[1]
        cols = self.collections(await self.active_generation())
        self._active = (now, cols)
        return cols

    async def activate(self, generation: str) -> None:
        """Point readers and the projector at ``generation`` (one atomic document write)."""
        await self.db[META].update_one({"_id": "active"}, {"$set": {"generation": generation,
                                        "activated_at": datetime.now(UTC)}}, upsert=True)
        self._active = None

    async def ensure_indexes(self, cols: Collections | None = None) -> None:
        cols = cols or await self.active(fresh=True)
        await cols.payments.create_indexes(PAYMENT_INDEXES)
        await cols.statistics.create_indexes(STATISTICS_INDEXES)
        await cols.tombstones.create_indexes(TOMBSTONE_INDEXES)

    async def drop(self, generation: str) -> None:
        cols = self.collections(generation)
        for c in (cols.payments, cols.tombstones, cols.statistics):
            await c.drop()

    # ----------------------------------------------------------------- queries

    async def search(self, org: str, q: SearchQuery) -> SearchResult:
        cols = await self.active()
        flt = search_filter(org, q)
        page_flt = flt
        skip = 0
        if q.starting_after is not None:
            page_flt = {"$and": [flt, keyset_filter(q, decode_cursor(self.cursor_key, org, q, q.starting_after))]}
        elif q.page is not None:
            skip = (q.page - 1) * q.limit
        cursor = cols.payments.find(page_flt, sort=sort_spec(q), skip=skip, limit=q.limit + 1,
                                    hint=choose_index(flt, q.sort_field))
        docs = await cursor.to_list()
        total = await cols.payments.count_documents(flt)
        return page_result(self.cursor_key, org, q, docs, total)

    async def get(self, org: str, payment_id: str) -> PaymentView | None:
        cols = await self.active()
        doc = await cols.payments.find_one({"_id": document_id(org, payment_id)})
        return payment_of(doc) if doc else None

    async def version(self, org: str, payment_id: str) -> int | None:
        """Version the read model holds (live or tombstone), ``None`` if unknown."""
        return (await self.versions(org, [payment_id])).get(payment_id)

    async def versions(self, org: str, payment_ids: list[str]) -> dict[str, int]:
        """Versions the read model holds of these payments of ``org`` (live or tombstone);
        unknown ones are absent. Tombstones are read only for ids not live."""
        cols = await self.active()
        keys = {document_id(org, pid): pid for pid in payment_ids}
        found = {keys[d["_id"]]: d["version"]
                 async for d in cols.payments.find({"_id": {"$in": list(keys)}}, {"version": 1})}
        missing = [key for key, pid in keys.items() if pid not in found]
        if missing:
            found |= {keys[d["_id"]]: d["version"]
                      async for d in cols.tombstones.find({"_id": {"$in": missing}}, {"version": 1})}
        return found

    async def statistics(self, org: str, q: StatisticsQuery) -> Statistics:
        cols = await self.active()
        buckets = await cols.statistics.find(statistics_filter(org, q)).to_list()
        return summarize(q, buckets)
