"""Payments, events and a reference read model for tests: a snapshot with sensible
defaults, a valid life of one payment as events, and the statistics recounted by brute
force."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.query.domain import BatchPlan, BucketKey, Stored, contribution_of, document_id, plan_batch
from shared.events import EventType, PaymentEvent, new_event
from shared.payment import TRANSITIONS, UNDELETABLE, PaymentSnapshot, PaymentStatus, Refund, status_after_refunds

BASE = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def snapshot(pid: str, org: str = "org-a", *, amount: int = 1000, currency: str = "EUR",
             status: PaymentStatus = PaymentStatus.PROCESSING, version: int = 1,
             created_at: datetime = BASE, user_id: str | None = "user-1",
             deleted: bool = False, amount_refunded: int = 0, refunds: list | None = None) -> PaymentSnapshot:
    return PaymentSnapshot(
        id=pid, organization_id=org, user_id=user_id, amount=amount, currency=currency, status=status,
        version=version, created_at=created_at, updated_at=created_at + timedelta(seconds=version),
        deleted_at=created_at + timedelta(seconds=version) if deleted else None,
        amount_refunded=amount_refunded, refunds=refunds or [],
    )


def history(pid: str, org: str, created_at: datetime, currency: str, steps: list[tuple[str, int]],
            *, delete: bool, source: str = "/tests") -> list[PaymentEvent]:
    """A valid life of one payment: created, then updates / status changes, maybe deleted."""
    current = snapshot(pid, org, amount=steps[0][1] if steps else 500, currency=currency, created_at=created_at)
    events = [new_event(EventType.CREATED, current, source=source, time=created_at)]
    for kind, amount in steps[1:]:
        status = current.status
        refund = None
        if kind == "update" and status is PaymentStatus.PROCESSING:
            current = current.model_copy(update={"amount": amount, "version": current.version + 1})
            etype = EventType.UPDATED
        elif TRANSITIONS[status]:
            target = sorted(TRANSITIONS[status])[amount % len(TRANSITIONS[status])]
            if target in (PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED):
                # A refund of part (a share of what is left, by the step's number) or of all that is left.
                left = current.amount - current.amount_refunded
                part = left if target is PaymentStatus.REFUNDED or left == 1 else 1 + amount % (left - 1)
                refund = Refund(id=f"rf_{current.version}", amount=part, created_at=created_at, actor="tests")
                refunded = current.amount_refunded + part
                current = current.model_copy(update={
                    "status": status_after_refunds(current.amount, refunded), "amount_refunded": refunded,
                    "refunds": [*current.refunds, refund], "version": current.version + 1})
                etype = EventType.REFUNDED
            else:
                current = current.model_copy(update={"status": target, "version": current.version + 1})
                etype = EventType.STATUS_CHANGED
        else:
            continue
        events.append(new_event(etype, current, source=source, refund=refund,
                                time=created_at + timedelta(seconds=current.version)))
    if delete and current.status not in UNDELETABLE:
        gone = current.model_copy(update={"version": current.version + 1,
                                          "deleted_at": created_at + timedelta(seconds=99)})
        events.append(new_event(EventType.DELETED, gone, source=source, time=gone.deleted_at))
    return events


@dataclass
class MemoryReadModel:
    """Reference adapter: applies BatchPlans the way projection._write does, in memory."""

    payments: dict[str, PaymentSnapshot] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    stats: dict[BucketKey, dict[str, int]] = field(default_factory=dict)

    def stored(self) -> dict[str, Stored]:
        out = {pid: Stored(v, None) for pid, v in self.tombstones.items()}
        out.update({pid: Stored(p.version, contribution_of(p)) for pid, p in self.payments.items()})
        return out

    def apply(self, events: list[PaymentEvent]) -> BatchPlan:
        plan = plan_batch(self.stored(), events)
        for pid, e in plan.upserts.items():
            self.payments[pid] = e.payment
            self.tombstones.pop(pid, None)
        for pid, e in plan.tombstones.items():
            self.payments.pop(pid, None)
            self.tombstones[pid] = e.paymentversion
        for key, d in plan.deltas.items():
            b = self.stats.setdefault(key, {"count": 0, "sum": 0, "refunded": 0})
            b["count"] += d.count
            b["sum"] += d.sum
            b["refunded"] += d.refunded
            if d.min is not None:
                b["min"] = min(b.get("min", d.min), d.min)
                b["max"] = max(b.get("max", d.max), d.max)
            if d.lost_member:
                members = [p.amount for p in self.payments.values() if contribution_of(p).bucket == key]
                if not members:
                    del self.stats[key]
                else:
                    b["min"], b["max"] = min(members), max(members)
        return plan


def newest_versions(lives: list[list[PaymentEvent]]) -> dict[str, PaymentEvent]:
    return {document_id(life[-1].organizationid, life[-1].subject): life[-1] for life in lives}


def recount(payments: list[PaymentSnapshot]) -> dict[BucketKey, dict[str, int]]:
    """Brute-force statistics from the live payments."""
    amounts: dict[BucketKey, list[int]] = defaultdict(list)
    refunded: dict[BucketKey, int] = defaultdict(int)
    for p in payments:
        contribution = contribution_of(p)
        assert contribution is not None
        amounts[contribution.bucket].append(p.amount)
        refunded[contribution.bucket] += p.amount_refunded
    return {k: {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v), "refunded": refunded[k]}
            for k, v in amounts.items()}
