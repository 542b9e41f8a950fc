"""Event histories, delivery orders and a reference read model for projection tests.

Imported by tests/unit/test_projection.py and tests/integration/query (no tests here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from services.query.domain import BatchPlan, BucketKey, Stored, contribution_of, document_id, plan_batch
from shared.events import EventType, PaymentEvent, new_event
from shared.payment import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_NUMBER,
    MIN_NUMBER,
    TRANSITIONS,
    UNDELETABLE,
    PaymentSnapshot,
    PaymentStatus,
)

BASE = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)

# Text the payment content contract accepts: any Unicode scalar but NUL (surrogates are not scalars).
contract_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def contract_texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(contract_chars, max_size=max_size)


contract_keys = st.text(contract_chars, min_size=1, max_size=MAX_METADATA_KEY_LENGTH).filter(
    lambda k: not k.startswith("$") and "." not in k)
contract_values = st.one_of(
    st.none(), st.booleans(), st.integers(MIN_NUMBER, MAX_NUMBER),
    st.floats(min_value=float(MIN_NUMBER), max_value=float(MAX_NUMBER + 1), exclude_max=True),
    contract_texts(MAX_METADATA_VALUE_LENGTH),
)
# Bounded so that the total size stays within MAX_METADATA_BYTES (50 short keys; the byte
# limit has its own tests).
contract_metadata = st.dictionaries(
    contract_keys, st.one_of(contract_values, contract_texts(60)), max_size=MAX_METADATA_KEYS).filter(
    lambda m: sum(len(k) + len(str(v)) for k, v in m.items()) * 4 < 16000)


def snapshot(pid: str, org: str = "org-a", *, amount: int = 1000, currency: str = "EUR",
             status: PaymentStatus = PaymentStatus.PROCESSING, version: int = 1,
             created_at: datetime = BASE, user_id: str | None = "user-1",
             deleted: bool = False) -> PaymentSnapshot:
    return PaymentSnapshot(
        id=pid, organization_id=org, user_id=user_id, amount=amount, currency=currency, status=status,
        version=version, created_at=created_at, updated_at=created_at + timedelta(seconds=version),
        deleted_at=created_at + timedelta(seconds=version) if deleted else None,
    )


def history(pid: str, org: str, created_at: datetime, currency: str, steps: list[tuple[str, int]],
            *, delete: bool, source: str = "/tests") -> list[PaymentEvent]:
    """A valid life of one payment: created, then updates / status changes, maybe deleted."""
    current = snapshot(pid, org, amount=steps[0][1] if steps else 500, currency=currency, created_at=created_at)
    events = [new_event(EventType.CREATED, current, source=source, time=created_at)]
    for kind, amount in steps[1:]:
        status = current.status
        if kind == "update" and status is PaymentStatus.PROCESSING:
            current = current.model_copy(update={"amount": amount, "version": current.version + 1})
            etype = EventType.UPDATED
        elif TRANSITIONS[status]:
            target = sorted(TRANSITIONS[status])[amount % len(TRANSITIONS[status])]
            current = current.model_copy(update={"status": target, "version": current.version + 1})
            etype = EventType.STATUS_CHANGED
        else:
            continue
        events.append(new_event(etype, current, source=source,
                                time=created_at + timedelta(seconds=current.version)))
    if delete and current.status not in UNDELETABLE:
        gone = current.model_copy(update={"version": current.version + 1,
                                          "deleted_at": created_at + timedelta(seconds=99)})
        events.append(new_event(EventType.DELETED, gone, source=source, time=gone.deleted_at))
    return events


@st.composite
def histories(draw: st.DrawFn, max_payments: int = 6) -> list[list[PaymentEvent]]:
    count = draw(st.integers(1, max_payments))
    result = []
    for i in range(count):
        steps = draw(st.lists(st.tuples(st.sampled_from(["update", "status"]), st.integers(1, 5000)),
                              min_size=1, max_size=5))
        # Payment ids are per organization: p0 exists in both, with independent lives.
        result.append(history(
            f"p{i // 2}", ("org-a", "org-b")[i % 2],
            BASE + timedelta(hours=draw(st.integers(0, 3))), draw(st.sampled_from(["EUR", "JPY"])),
            steps, delete=draw(st.booleans()),
        ))
    return result


@st.composite
def deliveries(draw: st.DrawFn, max_payments: int = 6) -> tuple[list[list[PaymentEvent]], list[list[PaymentEvent]]]:
    """(histories, batches): every event delivered at least once, with duplicates, replays
    of whole prefixes and arbitrary reordering, cut into batches."""
    lives = draw(histories(max_payments))
    events = [e for life in lives for e in life]
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    replay_upto = draw(st.integers(0, len(events)))
    stream = draw(st.permutations(events + extra)) + events[:replay_upto]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        if cut > start:
            batches.append(stream[start:cut])
            start = cut
    return lives, batches


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
            b = self.stats.setdefault(key, {"count": 0, "sum": 0})
            b["count"] += d.count
            b["sum"] += d.sum
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
    for p in payments:
        contribution = contribution_of(p)
        assert contribution is not None
        amounts[contribution.bucket].append(p.amount)
    return {k: {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v)} for k, v in amounts.items()}
