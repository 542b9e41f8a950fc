"""The projection's writes on MongoDB (the ProjectionStore port): a batch in ONE
multi-document transaction (payments, tombstones, statistics, history), so a crash leaves all of it
or none; beside it, the organizations still owing a cache bump (recorded in that same
transaction) and the sessions the projectors run transactions on. What to write is
:func:`services.query.domain.plan_batch`'s decision.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, DeleteOne, ReplaceOne, UpdateOne, WriteConcern

from services.query.adapters import mongo_errors
from services.query.adapters.read_model import META
from services.query.domain import (
    BatchPlan,
    BucketKey,
    Outcome,
    Stored,
    bucket_fields,
    document_id,
    payment_document,
    plan_batch,
    stored_from_doc,
    tombstone_document,
)
from services.query.history import history_document
from services.query.ports import AppliedBatch
from shared.events import PaymentEvent

log = logging.getLogger("payments.query.projector")

# A batch's offsets are committed once its transaction returns, so the commit must be
# durable by then: acknowledged by a majority of the replica set and journaled. (The local
# stack's SecantusDB syncs on commit when it persists, to honour j:true.)
DURABLE = {"w": "majority", "j": True}


@dataclass(frozen=True, slots=True)
class PendingBumps:
    """Where a projector records, in the batch's own transaction, the organizations whose
    cache epoch still has to be bumped, so a crash before Redis accepted the bump
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


@dataclass
class RecordedSessions:
    """The sessions a consumer group's projectors run transactions on
    (``{_id: "projector-sessions:<group>", lsids}``).

    A SIGKILLed projector leaves its transaction open; MongoDB holds its locks (write
    conflicts) until ``transactionLifetimeLimitSeconds`` (60 s) reaps it. So every
    projector records its sessions, and a starting one kills the recorded ones. Cost: a
    live sibling replica's in-flight batch is aborted once, and retried.
    """

    collection: Any
    group: str
    _recorded: set[bytes] = field(default_factory=set)

    @property
    def _doc(self) -> dict[str, str]:
        return {"_id": f"projector-sessions:{self.group}"}

    async def record(self, session: Any) -> None:
        lsid = session.session_id
        key = bytes(lsid["id"])
        if key not in self._recorded:
            await self.collection.update_one(self._doc, {"$addToSet": {"lsids": lsid}}, upsert=True)
            self._recorded.add(key)

    async def kill_recorded(self, client: Any) -> int:
        """Kill the recorded sessions (aborting their transactions); how many there were."""
        doc = await self.collection.find_one(self._doc)
        if not doc or not doc.get("lsids"):
            return 0
        await client.admin.command("killSessions", doc["lsids"])
        await self.collection.update_one(self._doc, {"$set": {"lsids": []}})
        return len(doc["lsids"])


async def apply_batch(client: Any, collections: Any, events: Sequence[PaymentEvent],
                      on_session: Any = None, *, pending: PendingBumps | None = None,
                      dry_run: bool = False) -> AppliedBatch:
    """Apply parsed events to the read model in one transaction; returns per-event outcomes.

    ``client`` is an ``AsyncMongoClient``; ``collections`` a :class:`read_model.Collections`;
    ``on_session(session)`` runs before the transaction starts (the projector records the
    session id so a restarted projector can abort a transaction its killed predecessor
    left open). ``pending`` records the changed organizations in the same transaction.
    ``dry_run`` writes everything, then aborts: it raises exactly what a real apply would
    (the projector uses it to find which event of a failing batch is the poison).
    """
    if not events:
        return AppliedBatch([], set(), None)
    ids = list({document_id(e.organizationid, e.subject) for e in events})
    async with client.start_session() as session:
        if on_session is not None:
            await on_session(session)
        async with await session.start_transaction(write_concern=WriteConcern(**DURABLE)):
            stored: dict[str, Stored] = {}
            async for doc in collections.tombstones.find({"_id": {"$in": ids}}, session=session):
                stored[doc["_id"]] = stored_from_doc(doc, tombstone=True)
            async for doc in collections.payments.find({"_id": {"$in": ids}}, session=session):
                stored[doc["_id"]] = stored_from_doc(doc, tombstone=False)
            plan = plan_batch(stored, events)
            await _write(plan, stored, collections, session)
            await write_history(collections, events, session)
            if pending is not None and plan.organizations:
                await pending.add(plan.organizations, session)
            if dry_run:
                await session.abort_transaction()
    times = [e.time for e, o in zip(events, plan.outcomes, strict=True) if o == Outcome.APPLIED]
    return AppliedBatch(plan.outcomes, plan.organizations, max(times) if times else None)


async def _write(plan: BatchPlan, stored: Mapping[str, Stored], collections: Any, session: Any) -> None:
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
        update: dict[str, Any] = {"$inc": {"count": d.count, "sum": d.sum, "refunded": d.refunded},
                                  "$setOnInsert": bucket_fields(key)}
        if d.min is not None:
            update["$min"] = {"min": d.min}
            update["$max"] = {"max": d.max}
        stat_ops.append(UpdateOne({"_id": key.id}, update, upsert=True))
    if stat_ops:
        await collections.statistics.bulk_write(stat_ops, ordered=False, session=session)
    await _settle_buckets([k for k, d in plan.deltas.items() if d.lost_member], collections, session)


async def write_history(collections: Any, events: Sequence[PaymentEvent], session: Any = None) -> None:
    """Every event's version into the history, whatever its outcome for the payment
    document: a version older than the one held (out of order, a repair) still belongs
    to the history. Insert-only, keyed by (organization, payment, version): idempotent."""
    ops = [UpdateOne({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
           for doc in map(history_document, events)]
    if ops:
        await collections.history.bulk_write(ops, ordered=False, session=session)


async def _settle_buckets(keys: Iterable[BucketKey], collections: Any, session: Any) -> None:
    """Buckets that lost a member: delete when empty, else recompute min/max from members."""
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


class MongoProjectionStore:
    """The ProjectionStore of one projector process (``group``: its consumer group)."""

    def __init__(self, client: Any, read_model: Any, group: str) -> None:
        self.client = client
        self.read_model = read_model  # adapters.read_model.MongoReadModel
        meta = read_model.db[META]  # the projector's bookkeeping beside the pointer
        self.pending = PendingBumps(meta, group, uuid.uuid4().hex)
        self.sessions = RecordedSessions(meta, group)
        self._target: Any = None

    async def recover(self) -> set[str]:
        killed = await self.sessions.kill_recorded(self.client)
        if killed:
            log.info("aborted transactions of previous projector sessions", extra={"fields": {"sessions": killed}})
        return await self.pending.adopt()

    async def refresh(self) -> None:
        self._target = await self.read_model.active(fresh=True)

    async def apply(self, events: Sequence[PaymentEvent], *, dry_run: bool = False) -> AppliedBatch:
        return await apply_batch(self.client, self._target, events, self.sessions.record, pending=self.pending,
                                 dry_run=dry_run)

    async def bumped(self, orgs: set[str]) -> None:
        await self.pending.remove(orgs)

    is_transient = staticmethod(mongo_errors.is_transient)
    refusal = staticmethod(mongo_errors.refusal)
