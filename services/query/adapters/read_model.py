"""The MongoDB read model: ``payments``, ``tombstones``, ``statistics`` and ``history`` collections per
*generation* (``payments replay`` builds a fresh one and switches the pointer document
in ``read_model_meta``), their indexes, and the queries on them (built by the pure
:mod:`read_queries`). docs/query-service.md shows the documents.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import IndexModel

from services.query.adapters.cursors import decode_cursor
from services.query.adapters.read_queries import (
    keyset_filter,
    page_result,
    payment_of,
    search_filter,
    sort_spec,
    statistics_filter,
    summarize,
)
from services.query.domain import document_id
from services.query.history import history_id, history_page, payment_at
from services.query.queries import HistoryQuery, PaymentHistory, SearchQuery, SearchResult, Statistics, StatisticsQuery
from shared.payment_view import Payment

META = "read_model_meta"
DEFAULT_GENERATION = "g0"

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
# One document per (organization, payment, version) (services/query/history.py); the
# _id says the same, the index serves a history's pages in version order.
HISTORY_INDEXES = [IndexModel([("organization_id", 1), ("payment_id", 1), ("version", 1)], name="org_payment_version",
                              unique=True)]


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
    history: Any


class MongoReadModel:
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
            self.db[f"history_{generation}"],
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

    async def generation(self) -> str:
        return (await self.active()).generation

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
        await cols.history.create_indexes(HISTORY_INDEXES)

    async def drop(self, generation: str) -> None:
        cols = self.collections(generation)
        for c in (cols.payments, cols.tombstones, cols.statistics, cols.history):
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

    async def get(self, org: str, payment_id: str) -> Payment | None:
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

    async def history(self, org: str, q: HistoryQuery) -> PaymentHistory | None:
        """A page of the payment's history; None if the organization has no such payment
        (deleted ones keep theirs)."""
        cols = await self.active()
        after = q.starting_after or 0
        # from the version before the page's first: its snapshot gives that one's changes
        flt = {"organization_id": org, "payment_id": q.payment_id, "version": {"$gte": max(after, 1)}}
        docs = await cols.history.find(flt, sort=[("version", 1)], limit=q.limit + 2).to_list()
        if not docs and not await self._has_history(cols, org, q.payment_id):
            return None
        return history_page(q.payment_id, docs, after, q.limit)

    async def at_version(self, org: str, payment_id: str, version: int) -> tuple[Payment | None, int | None]:
        """The payment as at ``version``, and the newest version its history holds
        (``(None, None)``: no such payment in this organization)."""
        cols = await self.active()
        doc = await cols.history.find_one({"_id": history_id(org, payment_id, version)})
        newest = await cols.history.find_one({"organization_id": org, "payment_id": payment_id},
                                             {"version": 1}, sort=[("version", -1)])
        return (payment_at(doc) if doc else None), (newest["version"] if newest else None)

    @staticmethod
    async def _has_history(cols: Collections, org: str, payment_id: str) -> bool:
        return await cols.history.find_one({"organization_id": org, "payment_id": payment_id}, {"_id": 1}) is not None

    async def statistics(self, org: str, q: StatisticsQuery) -> Statistics:
        cols = await self.active()
        buckets = await cols.statistics.find(statistics_filter(org, q)).to_list()
        return summarize(q, buckets)
