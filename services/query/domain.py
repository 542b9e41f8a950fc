"""Projection of payment events into the read model.

Two layers, in the cosmicpython spirit:

* **Decisions (pure)**: :func:`plan_batch` takes what the read model currently stores
  for the payments of a batch (version, and what each one contributes to the
  statistics) and the batch's events, and returns a :class:`BatchPlan`: the outcome of
  every event (applied / duplicate), the documents to write, and the statistics deltas
  per bucket (organization × UTC day of ``created_at`` × currency × status). No I/O, so
  it is property-tested in milliseconds.
* **Writes**: :func:`apply_batch` loads the stored state, asks :func:`plan_batch`, and
  writes payments, tombstones and statistics in ONE MongoDB multi-document transaction,
  so a crash between two writes leaves either all or none of them.

Rules:

* an event is applied only if its ``paymentversion`` is greater than the stored version
  (live payment or tombstone); anything else is a duplicate, a replay or an out-of-order
  delivery and changes nothing;
* a ``deleted`` event removes the payment from search and leaves a tombstone carrying
  the version, so an older replayed event cannot resurrect it;
* statistics: ``count`` and ``sum`` move by exact ``$inc`` deltas; ``min``/``max`` cannot
  be decremented, so a bucket that loses a member has them recomputed from its live
  members (an indexed query bounded by the bucket) and is deleted when its count is 0.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.events import EventType, PaymentEvent
from shared.payment import PaymentSnapshot

# A batch's offsets are committed once its transaction returns, so the commit must be
# durable by then: acknowledged by a majority of the replica set and journaled. (The local
# stack's SecantusDB syncs on commit when it persists, to honour j:true.)
DURABLE = {"w": "majority", "j": True}

APPLIED = "applied"
DUPLICATE = "duplicate"
INVALID = "invalid"
DEAD_LETTERED = "dead_lettered"  # valid, but the read model (or our code) could not take it


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    """One statistics bucket: organization × UTC day of created_at × currency × status."""

    organization_id: str
    day: str  # YYYY-MM-DD (UTC)
    currency: str
    status: str

    @property
    def id(self) -> str:
        return f"{self.organization_id}|{self.day}|{self.currency}|{self.status}"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one live payment adds to the statistics."""

    bucket: BucketKey
    amount: int


@dataclass(frozen=True, slots=True)
class Stored:
    """What the read model holds for one payment: its version, and its contribution
    to the statistics (``None`` for a tombstone)."""

    version: int
    contribution: Contribution | None


@dataclass(slots=True)
class BucketDelta:
    count: int = 0
    sum: int = 0
    min: int | None = None  # smallest amount added to the bucket by this batch
    max: int | None = None
    lost_member: bool = False  # a member left: min/max must be recomputed

    def add(self, amount: int) -> None:
        self.count += 1
        self.sum += amount
        self.min = amount if self.min is None else min(self.min, amount)
        self.max = amount if self.max is None else max(self.max, amount)

    def remove(self, amount: int) -> None:
        self.count -= 1
        self.sum -= amount
        self.lost_member = True


@dataclass(slots=True)
class BatchPlan:
    outcomes: list[str] = field(default_factory=list)  # one per input event, same order
    upserts: dict[str, PaymentEvent] = field(default_factory=dict)  # document id -> newest event
    tombstones: dict[str, PaymentEvent] = field(default_factory=dict)  # document id -> deleted event
    deltas: dict[BucketKey, BucketDelta] = field(default_factory=dict)

    @property
    def organizations(self) -> set[str]:
        return {e.organizationid for e in (*self.upserts.values(), *self.tombstones.values())}

    def delta(self, key: BucketKey) -> BucketDelta:
        return self.deltas.setdefault(key, BucketDelta())


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def contribution_of(payment: PaymentSnapshot) -> Contribution | None:
    if payment.deleted_at is not None:
        return None
    bucket = BucketKey(payment.organization_id, utc_day(payment.created_at), payment.currency, payment.status)
    return Contribution(bucket, payment.amount)


def plan_batch(stored: Mapping[str, Stored], events: Sequence[PaymentEvent]) -> BatchPlan:
    """Decide, for a batch of events, what to write. Pure."""
    plan = BatchPlan()
    current: dict[str, Stored] = dict(stored)
    for event in events:
        pid = document_id(event.organizationid, event.subject)
        before = current.get(pid)
        if before is not None and event.paymentversion <= before.version:
            plan.outcomes.append(DUPLICATE)
            continue
        after = Stored(event.paymentversion, contribution_of(event.payment))
        old = before.contribution if before is not None else None
        if old != after.contribution:  # same bucket and amount: statistics unchanged
            if old is not None:
                plan.delta(old.bucket).remove(old.amount)
            if after.contribution is not None:
                plan.delta(after.contribution.bucket).add(after.contribution.amount)
        current[pid] = after
        if event.type is EventType.DELETED:
            plan.upserts.pop(pid, None)
            plan.tombstones[pid] = event
        else:
            plan.tombstones.pop(pid, None)
            plan.upserts[pid] = event
        plan.outcomes.append(APPLIED)
    return plan


def stored_from_doc(doc: Mapping[str, Any], *, tombstone: bool) -> Stored:
    if tombstone:
        return Stored(int(doc["version"]), None)
    bucket = BucketKey(doc["organization_id"], doc["day"], doc["currency"], doc["status"])
    return Stored(int(doc["version"]), Contribution(bucket, int(doc["amount"])))


def document_id(organization_id: str, payment_id: str) -> str:
    """``_id`` of a payment's read-model documents: payment ids are per organization, so
    the key holds both (a JSON pair: unambiguous whatever the characters)."""
    return json.dumps([organization_id, payment_id], separators=(",", ":"))


def payment_document(event: PaymentEvent, projected_at: datetime) -> dict[str, Any]:
    """The read-model document of a live payment (``_id`` = :func:`document_id`)."""
    p = event.payment
    return {
        "_id": document_id(p.organization_id, p.id),
        "id": p.id,
        "organization_id": p.organization_id,
        "user_id": p.user_id,
        "amount": p.amount,
        "currency": p.currency,
        "status": str(p.status),
        "description": p.description,
        "metadata": p.metadata,
        "version": p.version,
        "created_at": p.created_at.astimezone(UTC),
        "updated_at": p.updated_at.astimezone(UTC),
        "day": utc_day(p.created_at),
        "event_id": event.id,
        "event_time": event.time.astimezone(UTC),
        "projected_at": projected_at,
    }


def tombstone_document(event: PaymentEvent, projected_at: datetime) -> dict[str, Any]:
    p = event.payment
    return {
        "_id": document_id(p.organization_id, p.id),
        "id": p.id,
        "organization_id": p.organization_id,
        "version": p.version,
        "deleted_at": p.deleted_at,
        "event_id": event.id,
        "projected_at": projected_at,
    }


def bucket_fields(key: BucketKey) -> dict[str, Any]:
    return {"organization_id": key.organization_id, "day": key.day, "currency": key.currency, "status": key.status}


# --------------------------------------------------------------------------- writes


@dataclass(frozen=True, slots=True)
class BatchResult:
    outcomes: list[str]
    organizations: set[str]
    newest_event_time: datetime | None


@dataclass(frozen=True, slots=True)
class PendingBumps:
    """Where a projector records, in the batch's own transaction, the organizations whose
    cache generation still has to be bumped, so a crash before Redis accepted the bump
    cannot leave a cached answer staler than the read model.

    One document per projector process (``{_id: "pending-bumps:<group>:<member>", orgs}``),
    so replicas never write-conflict on it; a starting projector adopts the documents of
    the others (a dead predecessor's, or, harmlessly, a live sibling's: it bumps them too).
    """

    collection: Any
    group: str
    member: str

    @property
    def id(self) -> str:
        return f"{self._prefix}{self.member}"

    @property
    def _prefix(self) -> str:
        return f"pending-bumps:{self.group}:"

    async def add(self, orgs: Iterable[str], session: Any = None) -> None:
        await self.collection.update_one({"_id": self.id}, {"$addToSet": {"orgs": {"$each": sorted(orgs)}}},
                                         upsert=True, session=session)

    async def remove(self, orgs: Iterable[str]) -> None:
        await self.collection.update_one({"_id": self.id}, {"$pullAll": {"orgs": sorted(orgs)}})

    async def load(self) -> set[str]:
        doc = await self.collection.find_one({"_id": self.id})
        return set(doc.get("orgs", ())) if doc else set()

    async def adopt(self) -> set[str]:
        """Move the other projectors' pending organizations into this one's document."""
        query = {"_id": {"$regex": "^" + re.escape(self._prefix), "$ne": self.id}}
        docs = [d async for d in self.collection.find(query)]
        orgs = {o for d in docs for o in d.get("orgs", ())}
        if orgs:
            await self.add(orgs)  # first recorded here, then forgotten there
        if docs:
            await self.collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        return orgs | await self.load()


async def apply_batch(client: Any, collections: Any, events: Sequence[PaymentEvent],
                      on_session: Any = None, *, pending: PendingBumps | None = None,
                      dry_run: bool = False) -> BatchResult:
    """Apply parsed events to the read model in one transaction; returns per-event outcomes.

    ``client`` is an ``AsyncMongoClient``; ``collections`` a :class:`read_model.Collections`;
    ``on_session(session)`` runs before the transaction starts (the projector records the
    session id so a restarted projector can abort a transaction its killed predecessor
    left open). ``pending`` records the changed organizations in the same transaction.
    ``dry_run`` writes everything, then aborts: it raises exactly what a real apply would
    (the projector uses it to find which event of a failing batch is the poison).
    """
    if not events:
        return BatchResult([], set(), None)
    ids = list({document_id(e.organizationid, e.subject) for e in events})
    async with client.start_session() as session:
        if on_session is not None:
            await on_session(session)
        from pymongo import WriteConcern

        async with await session.start_transaction(write_concern=WriteConcern(**DURABLE)):
            stored: dict[str, Stored] = {}
            async for doc in collections.tombstones.find({"_id": {"$in": ids}}, session=session):
                stored[doc["_id"]] = stored_from_doc(doc, tombstone=True)
            async for doc in collections.payments.find({"_id": {"$in": ids}}, session=session):
                stored[doc["_id"]] = stored_from_doc(doc, tombstone=False)
            plan = plan_batch(stored, events)
            await _write(plan, stored, collections, session)
            if pending is not None and plan.organizations:
                await pending.add(plan.organizations, session)
            if dry_run:
                await session.abort_transaction()
    times = [e.time for e, o in zip(events, plan.outcomes, strict=True) if o == APPLIED]
    return BatchResult(plan.outcomes, plan.organizations, max(times) if times else None)


async def _write(plan: BatchPlan, stored: Mapping[str, Stored], collections: Any, session: Any) -> None:
    from pymongo import DeleteOne, ReplaceOne, UpdateOne

    now = datetime.now(UTC)
    was_live = {pid for pid, s in stored.items() if s.contribution is not None}
    was_tombstone = set(stored) - was_live
    payment_ops: list[Any] = [
        ReplaceOne({"_id": pid}, payment_document(e, now), upsert=True) for pid, e in plan.upserts.items()
    ]
    payment_ops += [DeleteOne({"_id": pid}) for pid in plan.tombstones if pid in was_live]
    tombstone_ops: list[Any] = [
        ReplaceOne({"_id": pid}, tombstone_document(e, now), upsert=True) for pid, e in plan.tombstones.items()
    ]
    tombstone_ops += [DeleteOne({"_id": pid}) for pid in plan.upserts if pid in was_tombstone]
    if payment_ops:
        await collections.payments.bulk_write(payment_ops, ordered=False, session=session)
    if tombstone_ops:
        await collections.tombstones.bulk_write(tombstone_ops, ordered=False, session=session)
    stat_ops = []
    for key, d in plan.deltas.items():
        update: dict[str, Any] = {"$inc": {"count": d.count, "sum": d.sum}, "$setOnInsert": bucket_fields(key)}
        if d.min is not None:
            update["$min"] = {"min": d.min}
            update["$max"] = {"max": d.max}
        stat_ops.append(UpdateOne({"_id": key.id}, update, upsert=True))
    if stat_ops:
        await collections.statistics.bulk_write(stat_ops, ordered=False, session=session)
    await _settle_buckets([k for k, d in plan.deltas.items() if d.lost_member], collections, session)


async def _settle_buckets(keys: Iterable[BucketKey], collections: Any, session: Any) -> None:
    """Buckets that lost a member: delete when empty, else recompute min/max from members."""
    from pymongo import ASCENDING, DESCENDING

    for key in keys:
        members = {**bucket_fields(key)}
        low = await collections.payments.find_one(
            members, {"amount": 1}, sort=[("amount", ASCENDING)], session=session
        )
        if low is None:
            await collections.statistics.delete_one({"_id": key.id}, session=session)
            continue
        high = await collections.payments.find_one(
            members, {"amount": 1}, sort=[("amount", DESCENDING)], session=session
        )
        await collections.statistics.update_one(
            {"_id": key.id}, {"$set": {"min": low["amount"], "max": high["amount"]}}, session=session
        )


def lag_seconds(newest_event_time: datetime | None) -> float | None:
    if newest_event_time is None:
        return None
    return max(0.0, time.time() - newest_event_time.timestamp())
