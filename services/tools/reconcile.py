"""``payments reconcile``: PostgreSQL, the source of truth, against the read model: missing,
extra and stale payments and differing statistics buckets per organization (recent
changes, still on their way, excepted), and with ``repair`` the read side rewritten from
PostgreSQL, each write conditional on what was read. It reads both wings' stores, so it
lives beside the facade, in neither wing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.query.domain import (
    BucketKey,
    Tally,
    bucket_fields,
    contribution_of,
    document_id,
    payment_document,
    tombstone_document,
)
from shared.events import EventType, new_event, system_actor
from shared.payment import PaymentSnapshot

log = logging.getLogger("payments.reconcile")

# Fields of a read-model payment document that must equal PostgreSQL's.
COMPARED = ("organization_id", "user_id", "amount", "currency", "status", "description", "metadata", "version",
            "amount_refunded", "expires_at")
Figures = dict[str, int]

# domain.refunded_of_document as a MongoDB expression (documents from before partial refunds).
REFUNDED_OF_DOCUMENT = {"$ifNull": ["$amount_refunded", {"$cond": [{"$eq": ["$status", "refunded"]}, "$amount", 0]}]}

RECONCILE_ACTOR = system_actor("reconcile")  # repairs write read-model documents, never events


# --------------------------------------------------------------------------- pure comparison


@dataclass(frozen=True, slots=True)
class BucketDrift:
    key: BucketKey
    expected: Figures | None  # None: the bucket should not exist
    actual: Figures | None  # None: the bucket is missing


@dataclass(slots=True)
class Drift:
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    buckets: list[BucketDrift] = field(default_factory=list)
    # versions of payments' histories ("<payment id>@<version>"): services/tools/reconcile_history.py
    history_missing: list[str] = field(default_factory=list)
    history_extra: list[str] = field(default_factory=list)
    history_stale: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        return {"missing": len(self.missing), "extra": len(self.extra), "stale": len(self.stale),
                "buckets": len(self.buckets), "history_missing": len(self.history_missing),
                "history_extra": len(self.history_extra), "history_stale": len(self.history_stale)}

    def merge(self, other: Drift) -> None:
        self.missing += other.missing
        self.extra += other.extra
        self.stale += other.stale
        self.buckets += other.buckets
        self.history_missing += other.history_missing
        self.history_extra += other.history_extra
        self.history_stale += other.history_stale


def recount(payments: Iterable[PaymentSnapshot]) -> dict[BucketKey, Figures]:
    """The statistics buckets the live payments add up to."""
    tallies: dict[BucketKey, Tally] = {}
    for payment in payments:
        contribution = contribution_of(payment)
        if contribution is not None:
            tallies.setdefault(contribution.bucket, Tally()).add(contribution.amount, contribution.refunded)
    return {key: tally.fields() for key, tally in tallies.items()}


def _differs(truth: PaymentSnapshot, doc: Mapping[str, Any]) -> bool:
    expected = payment_document_fields(truth)
    actual = {**doc, "expires_at": _instant(doc.get("expires_at"))}
    return any(actual.get(name) != expected[name] for name in COMPARED)


def _instant(value: datetime | None) -> datetime | None:
    """A time as MongoDB keeps it (UTC, milliseconds), to compare PostgreSQL's with it."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def payment_document_fields(payment: PaymentSnapshot) -> dict[str, Any]:
    return {"organization_id": payment.organization_id, "user_id": payment.user_id, "amount": payment.amount,
            "currency": payment.currency, "status": str(payment.status), "description": payment.description,
            "metadata": payment.metadata, "version": payment.version, "amount_refunded": payment.amount_refunded,
            "expires_at": _instant(payment.expires_at)}


def compare(truth: Mapping[str, PaymentSnapshot], docs: Mapping[str, Mapping[str, Any]],
            buckets: Mapping[BucketKey, Figures], *, settled: Callable[[PaymentSnapshot], bool]) -> Drift:
    """Drift of one organization's read side. ``truth``: PostgreSQL's payments by id (deleted
    ones included); ``docs``: the read model's payment documents by id; ``buckets``: its
    statistics. ``settled(p)`` is False for a payment still in flight (not drift yet)."""
    drift = Drift()
    unsettled: set[BucketKey] = set()
    for pid, payment in truth.items():
        doc = docs.get(pid)
        if not settled(payment):
            for c in (contribution_of(payment), _doc_bucket(doc)):
                if c is not None:
                    unsettled.add(c if isinstance(c, BucketKey) else c.bucket)
            continue
        if payment.deleted_at is not None:
            if doc is not None:
                drift.extra.append(pid)
        elif doc is None:
            drift.missing.append(pid)
        elif _differs(payment, doc):
            drift.stale.append(pid)
    drift.extra += sorted(pid for pid in docs if pid not in truth)
    expected = recount(truth.values())
    for key in sorted(set(expected) | set(buckets)):
        if key in unsettled:
            continue
        want, have = expected.get(key), buckets.get(key)
        if want != have:
            drift.buckets.append(BucketDrift(key, want, have))
    drift.missing.sort()
    drift.stale.sort()
    return drift


def _doc_bucket(doc: Mapping[str, Any] | None) -> BucketKey | None:
    return None if doc is None else BucketKey.of_document(doc)


def report(drift: Drift) -> dict[str, Any]:
    """The ``--json`` report."""
    return {
        "drift": drift.total, "counts": drift.counts(),
        "missing": drift.missing, "extra": drift.extra, "stale": drift.stale,
        "history_missing": drift.history_missing, "history_extra": drift.history_extra,
        "history_stale": drift.history_stale,
        "buckets": [{"organization_id": b.key.organization_id, "day": b.key.day, "currency": b.key.currency,
                     "status": b.key.status, "expected": b.expected, "actual": b.actual} for b in drift.buckets],
    }


# --------------------------------------------------------------------------- adapters


class Reconciler:
    """Reads PostgreSQL (asyncpg pool) and the read model (its active collections)."""

    def __init__(self, pool: Any, read_model: Any, cache: Any, *, source: str, grace_seconds: float = 60.0) -> None:
        self.pool = pool
        self.read_model = read_model
        self.cache = cache
        self.source = source
        self.grace = timedelta(seconds=grace_seconds)

    async def organizations(self, only: str | None = None) -> list[str]:
        if only is not None:
            return [only]
        async with self.pool.acquire() as conn:
            orgs = {r["organization_id"] for r in await conn.fetch("SELECT DISTINCT organization_id FROM payments")}
        cols = await self.read_model.active(fresh=True)
        orgs |= set(await cols.payments.distinct("organization_id"))
        orgs |= set(await cols.statistics.distinct("organization_id"))
        return sorted(orgs)

    async def _truth(self, org: str) -> dict[str, PaymentSnapshot]:
        from services.command.adapters.store import PAYMENT_COLUMNS, snapshot_from_row

        async with self.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE organization_id = $1", org)
        return {row["id"]: snapshot_from_row(row) for row in rows}

    async def _read_side(self, org: str) -> tuple[dict[str, dict[str, Any]], dict[BucketKey, Figures]]:
        cols = await self.read_model.active(fresh=True)
        docs = {d["id"]: d async for d in cols.payments.find({"organization_id": org})}
        buckets = {BucketKey.of_document(b): Tally.of_bucket(b).fields()
                   async for b in cols.statistics.find({"organization_id": org})}
        return docs, buckets

    async def check(self, org: str) -> tuple[Drift, dict[str, PaymentSnapshot], dict[str, dict[str, Any]]]:
        truth = await self._truth(org)
        docs, buckets = await self._read_side(org)
        horizon = datetime.now(UTC) - self.grace

        def settled(p: PaymentSnapshot) -> bool:
            return (p.deleted_at or p.updated_at) <= horizon

        return compare(truth, docs, buckets, settled=settled), truth, docs

    async def repair(self, org: str, drift: Drift, truth: Mapping[str, PaymentSnapshot],
                     docs: Mapping[str, Mapping[str, Any]]) -> int:
        """Rewrite the drifted payments and buckets of ``org``; returns how many writes applied."""
        cols = await self.read_model.active(fresh=True)
        now = datetime.now(UTC)
        applied = 0
        touched: set[BucketKey] = {b.key for b in drift.buckets}
        for pid in (*drift.missing, *drift.stale, *drift.extra):
            payment, seen = truth.get(pid), docs.get(pid)
            if (bucket := _doc_bucket(seen)) is not None:
                touched.add(bucket)
            key = {"_id": document_id(org, pid)}
            guard = {**key, "version": seen["version"]} if seen is not None else None
            if payment is None or payment.deleted_at is not None:
                if guard is not None and (await cols.payments.delete_one(guard)).deleted_count:
                    applied += 1
                if payment is not None:  # deleted in PostgreSQL: keep its tombstone
                    event = new_event(EventType.DELETED, payment, source=self.source, actor=RECONCILE_ACTOR)
                    await cols.tombstones.replace_one(key, tombstone_document(event, now), upsert=True)
                continue
            kind = EventType.CREATED if payment.version == 1 else EventType.UPDATED
            document = payment_document(new_event(kind, payment, source=self.source, actor=RECONCILE_ACTOR), now)
            if (contribution := contribution_of(payment)) is not None:
                touched.add(contribution.bucket)
            await cols.tombstones.delete_one(key)  # live in PostgreSQL: no tombstone
            if guard is None:
                try:
                    await cols.payments.insert_one(document)
                    applied += 1
                except DuplicateKeyError:  # the projector got there first
                    pass
            elif (await cols.payments.replace_one(guard, document)).modified_count:
                applied += 1
        for key in sorted(touched):
            applied += await _recompute_bucket(cols, key)
        if applied:
            await self.cache.bump({org})
        return applied


async def _recompute_bucket(cols: Any, key: BucketKey) -> int:
    """Set one statistics bucket to the aggregate of its members in the read model."""
    members = bucket_fields(key)
    pipeline = [{"$match": members},
                {"$group": {"_id": None, "count": {"$sum": 1}, "sum": {"$sum": "$amount"},
                            "min": {"$min": "$amount"}, "max": {"$max": "$amount"},
                            "refunded": {"$sum": REFUNDED_OF_DOCUMENT}}}]
    rows = [r async for r in await cols.payments.aggregate(pipeline)]
    if not rows:
        return (await cols.statistics.delete_one({"_id": key.id})).deleted_count
    figures = {k: int(rows[0][k]) for k in ("count", "sum", "min", "max", "refunded")}
    result = await cols.statistics.replace_one({"_id": key.id}, {"_id": key.id, **members, **figures}, upsert=True)
    return int(bool(result.modified_count or result.upserted_id))
