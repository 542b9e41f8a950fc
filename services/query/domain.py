"""What projecting a batch of events decides, pure (property-tested without MongoDB): an
event applies only above the stored version (a tombstone keeps its version, so nothing
resurrects a deleted payment), and the statistics move by exact deltas per bucket
(organization x UTC day x currency x status), a bucket that loses a member having its
min/max recomputed. adapters/batch_writes.py loads the state and writes the plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.events import EventType, PaymentEvent
from shared.payment import PaymentSnapshot, PaymentStatus


class Outcome(StrEnum):
    """What became of an event: the ``result`` label of payments_projection_events_total."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # a version the read model holds already (duplicate, replay, out of order)
    INVALID = "invalid"  # it breaks the event contract
    DEAD_LETTERED = "dead_lettered"  # valid, but the read model (or our code) could not take it


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    """One statistics bucket: organization × UTC day of created_at × currency × status."""

    organization_id: str
    day: str  # YYYY-MM-DD (UTC)
    currency: str
    status: str

    @classmethod
    def of_document(cls, doc: Mapping[str, Any]) -> BucketKey:
        """The bucket of a payment document or a statistics document (both carry its fields)."""
        return cls(doc["organization_id"], doc["day"], doc["currency"], doc["status"])

    @property
    def id(self) -> str:
        return f"{self.organization_id}|{self.day}|{self.currency}|{self.status}"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one live payment adds to the statistics."""

    bucket: BucketKey
    amount: int
    refunded: int = 0  # its amount_refunded


@dataclass(frozen=True, slots=True)
class Stored:
    """What the read model holds for one payment: its version, and its contribution
    to the statistics (``None`` for a tombstone)."""

    version: int
    contribution: Contribution | None


@dataclass(slots=True)
class Tally:
    """count, sum, min and max of amounts, and the sum refunded of them: what a statistics
    bucket holds. The one accumulator of the projection's deltas, the statistics answer
    and the reconciler."""

    count: int = 0
    sum: int = 0
    min: int | None = None
    max: int | None = None
    refunded: int = 0

    @classmethod
    def of_bucket(cls, doc: Mapping[str, Any]) -> Tally:
        """The tally a read-model statistics document holds (one written before partial
        refunds has no ``refunded``: ``payments reconcile --repair`` or a replay adds it)."""
        return cls(int(doc["count"]), int(doc["sum"]), int(doc["min"]), int(doc["max"]), int(doc.get("refunded", 0)))

    def add(self, amount: int, refunded: int = 0) -> None:
        self.merge(Tally(1, amount, amount, amount, refunded))

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.sum += other.sum
        self.refunded += other.refunded
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)

    def fields(self) -> dict[str, int]:
        """A non-empty tally as the figures of a statistics document."""
        assert self.min is not None and self.max is not None
        return {"count": self.count, "sum": self.sum, "min": self.min, "max": self.max, "refunded": self.refunded}


@dataclass(slots=True)
class BucketDelta(Tally):
    """What a batch changes in one bucket: ``min``/``max`` are those of the amounts it
    added; a member that left means they must be recomputed from the bucket's members."""

    lost_member: bool = False

    def remove(self, amount: int, refunded: int = 0) -> None:
        self.count -= 1
        self.sum -= amount
        self.refunded -= refunded
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
    return Contribution(bucket, payment.amount, payment.amount_refunded)


def plan_batch(stored: Mapping[str, Stored], events: Sequence[PaymentEvent]) -> BatchPlan:
    """Decide, for a batch of events, what to write. Pure."""
    plan = BatchPlan()
    current: dict[str, Stored] = dict(stored)
    for event in events:
        pid = document_id(event.organizationid, event.subject)
        before = current.get(pid)
        if before is not None and event.paymentversion <= before.version:
            plan.outcomes.append(Outcome.DUPLICATE)
            continue
        after = Stored(event.paymentversion, contribution_of(event.payment))
        old = before.contribution if before is not None else None
        if old != after.contribution:  # same bucket and amount: statistics unchanged
            if old is not None:
                plan.delta(old.bucket).remove(old.amount, old.refunded)
            if after.contribution is not None:
                plan.delta(after.contribution.bucket).add(after.contribution.amount, after.contribution.refunded)
        current[pid] = after
        if event.type is EventType.DELETED:
            plan.upserts.pop(pid, None)
            plan.tombstones[pid] = event
        else:
            plan.tombstones.pop(pid, None)
            plan.upserts[pid] = event
        plan.outcomes.append(Outcome.APPLIED)
    return plan


def stored_from_doc(doc: Mapping[str, Any], *, tombstone: bool) -> Stored:
    if tombstone:
        return Stored(int(doc["version"]), None)
    return Stored(int(doc["version"]), Contribution(BucketKey.of_document(doc), int(doc["amount"]),
                                                   refunded_of_document(doc)))


def refunded_of_document(doc: Mapping[str, Any]) -> int:
    """A payment document's amount_refunded; one projected before partial refunds has none,
    and was refunded in full if refunded at all (as shared/payment.py reads its snapshot)."""
    if "amount_refunded" in doc:
        return int(doc["amount_refunded"])
    return int(doc["amount"]) if doc.get("status") == PaymentStatus.REFUNDED else 0


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
        "expires_at": p.expires_at.astimezone(UTC) if p.expires_at is not None else None,
        "amount_refunded": p.amount_refunded,
        "refunds": [r.model_dump() for r in p.refunds],
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

