"""Reconciliation's comparison (pure): what counts as missing, extra, stale and bucket drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.query.domain import BucketKey, payment_document
from services.tools.reconcile import compare, recount
from shared.events import EventType, new_event
from shared.payment import PaymentSnapshot, PaymentStatus

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def snap(pid: str, amount: int = 100, *, status: PaymentStatus = PaymentStatus.PROCESSING, version: int = 1,
         deleted: bool = False, currency: str = "EUR") -> PaymentSnapshot:
    return PaymentSnapshot(id=pid, organization_id="org", user_id="u", amount=amount, currency=currency,
                           status=status, description="", metadata={}, version=version, created_at=T0,
                           updated_at=T0, deleted_at=T0 if deleted else None)


def doc(p: PaymentSnapshot) -> dict:
    return payment_document(new_event(EventType.CREATED if p.version == 1 else EventType.UPDATED, p), T0)


def everything_settled(p: PaymentSnapshot) -> bool:
    return True


def consistent(payments: list[PaymentSnapshot]) -> tuple[dict, dict, dict]:
    truth = {p.id: p for p in payments}
    docs = {p.id: doc(p) for p in payments if p.deleted_at is None}
    return truth, docs, recount(payments)


def test_a_consistent_read_side_has_no_drift() -> None:
    truth, docs, buckets = consistent([snap("a"), snap("b", 5, status=PaymentStatus.COMPLETED, version=2),
                                       snap("gone", deleted=True)])
    assert compare(truth, docs, buckets, settled=everything_settled).total == 0


def test_each_kind_of_drift_is_named() -> None:
    a, b, c, d = snap("a"), snap("b", 7), snap("c", version=2, status=PaymentStatus.COMPLETED), snap("d", deleted=True)
    truth, docs, buckets = consistent([a, b, c, d])
    del docs["a"]  # missing
    docs["c"] = doc(snap("c"))  # stale: version 1 on the read side
    docs["d"] = doc(snap("d"))  # extra: deleted in PostgreSQL
    docs["forged"] = doc(snap("forged"))  # extra: unknown to PostgreSQL
    key = BucketKey("org", "2026-11-30", "EUR", "processing")
    buckets[key] = {**buckets[key], "sum": buckets[key]["sum"] + 1}
    drift = compare(truth, docs, buckets, settled=everything_settled)
    assert (drift.missing, drift.stale, sorted(drift.extra)) == (["a"], ["c"], ["d", "forged"])
    assert [(x.key, x.actual["sum"] - x.expected["sum"]) for x in drift.buckets] == [(key, 1)]


def test_a_field_changed_by_hand_is_stale_at_the_same_version() -> None:
    truth, docs, buckets = consistent([snap("a")])
    docs["a"]["description"] = "edited in MongoDB"
    assert compare(truth, docs, buckets, settled=everything_settled).stale == ["a"]


def test_payments_in_flight_and_their_buckets_are_not_drift() -> None:
    fresh = snap("new", 9).model_copy(update={"updated_at": T0 + timedelta(hours=1)})
    truth, docs, buckets = consistent([snap("old"), fresh])
    del docs["new"]
    key = BucketKey("org", "2026-11-30", "EUR", "processing")
    buckets[key] = {"count": 1, "sum": 100, "min": 100, "max": 100}  # not yet counting "new"
    drift = compare(truth, docs, buckets, settled=lambda p: p.updated_at <= T0)
    assert drift.total == 0


def test_a_missing_or_surplus_bucket_is_drift() -> None:
    truth, docs, buckets = consistent([snap("a"), snap("b", currency="JPY")])
    jpy = BucketKey("org", "2026-11-30", "JPY", "processing")
    del buckets[jpy]
    surplus = BucketKey("org", "2026-11-29", "EUR", "failed")
    buckets[surplus] = {"count": 1, "sum": 1, "min": 1, "max": 1}
    drift = compare(truth, docs, buckets, settled=everything_settled)
    assert {(b.key, b.expected is None, b.actual is None) for b in drift.buckets} == {
        (jpy, False, True), (surplus, True, False)}


@given(st.lists(st.tuples(st.integers(1, 10**6), st.sampled_from(["EUR", "JPY"]), st.booleans()), max_size=30))
def test_recount_matches_the_live_payments(rows: list[tuple[int, str, bool]]) -> None:
    payments = [snap(f"p{i}", amount, currency=cur, deleted=deleted) for i, (amount, cur, deleted) in enumerate(rows)]
    buckets = recount(payments)
    live = [p for p in payments if p.deleted_at is None]
    assert sum(b["count"] for b in buckets.values()) == len(live)
    assert sum(b["sum"] for b in buckets.values()) == sum(p.amount for p in live)
    for key, b in buckets.items():
        amounts = [p.amount for p in live if p.currency == key.currency]
        assert (b["min"], b["max"]) == (min(amounts), max(amounts))


def refunded(pid: str, amount: int, part: int) -> PaymentSnapshot:
    status = PaymentStatus.REFUNDED if part == amount else PaymentStatus.PARTIALLY_REFUNDED
    return snap(pid, amount, status=status, version=3).model_copy(update={"amount_refunded": part})


def test_refunds_are_compared_in_payments_and_buckets() -> None:
    a, b = refunded("a", 1000, 300), refunded("b", 500, 500)
    truth, docs, buckets = consistent([a, b, snap("c", 700, status=PaymentStatus.COMPLETED, version=2)])
    key = BucketKey("org", "2026-11-30", "EUR", "partially_refunded")
    assert buckets[key]["refunded"] == 300
    assert buckets[BucketKey("org", "2026-11-30", "EUR", "refunded")]["refunded"] == 500
    assert compare(truth, docs, buckets, settled=everything_settled).total == 0
    docs["a"] = {**docs["a"], "amount_refunded": 200}  # a refund the read side missed
    buckets[key] = {**buckets[key], "refunded": 200}
    drift = compare(truth, docs, buckets, settled=everything_settled)
    assert drift.stale == ["a"] and [(x.key, x.expected["refunded"], x.actual["refunded"]) for x in drift.buckets] == [
        (key, 300, 200)]


def test_a_deadline_is_compared_as_mongodb_keeps_it() -> None:
    p = snap("a").model_copy(update={"expires_at": T0 + timedelta(hours=1, microseconds=123_456)})
    truth, docs, buckets = consistent([p])
    docs["a"] = {**docs["a"], "expires_at": (T0 + timedelta(hours=1, microseconds=123_000)).replace(tzinfo=None)}
    assert compare(truth, docs, buckets, settled=everything_settled).total == 0  # milliseconds, naive UTC: same
    docs["a"] = {**docs["a"], "expires_at": None}  # a moved deadline the read side missed
    assert compare(truth, docs, buckets, settled=everything_settled).stale == ["a"]
