"""Pure projection decisions: idempotency, ordering, tombstones and exact statistics."""

from __future__ import annotations

from hypothesis import given, settings

from services.query.domain import BucketKey, Outcome, document_id, plan_batch, utc_day
from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from tests.support.builders import MemoryReadModel, history, newest_versions, recount, snapshot
from tests.support.strategies import deliveries


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_delivery_order_gives_the_newest_versions_and_exact_statistics(case):  # noqa: ANN001
    lives, batches = case
    model = MemoryReadModel()
    for batch in batches:
        model.apply(batch)
    newest = newest_versions(lives)
    expected_live = {pid: e.payment for pid, e in newest.items() if e.type is not EventType.DELETED}
    assert model.payments == expected_live
    assert model.tombstones == {pid: e.paymentversion for pid, e in newest.items() if e.type is EventType.DELETED}
    assert model.stats == recount(list(model.payments.values()))


@settings(max_examples=100, deadline=None)
@given(deliveries())
def test_redelivering_everything_again_changes_nothing(case):  # noqa: ANN001
    _, batches = case
    model = MemoryReadModel()
    for batch in batches:
        model.apply(batch)
    before = (dict(model.payments), dict(model.tombstones), {k: dict(v) for k, v in model.stats.items()})
    for batch in batches:
        plan = model.apply(batch)
        assert set(plan.outcomes) <= {Outcome.DUPLICATE}
        assert not plan.upserts and not plan.tombstones and not plan.deltas
    assert (model.payments, model.tombstones, model.stats) == before


def test_outcomes_follow_versions_within_one_batch():
    life = history("p1", "org-a", snapshot("x").created_at, "EUR", [("update", 50), ("update", 100), ("update", 200)], delete=False)
    v1, v2, v3 = life
    plan = plan_batch({}, [v1, v3, v2, v1])
    assert plan.outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert plan.upserts[document_id("org-a", "p1")].paymentversion == 3
    [(key, delta)] = plan.deltas.items()
    assert (delta.count, delta.sum) == (1, 200)  # v1 added then replaced by v3
    assert delta.lost_member  # v1 left the bucket: min/max are recomputed by the adapter


def test_a_deleted_payment_is_not_resurrected_by_an_older_event():
    life = history("p1", "org-a", snapshot("x").created_at, "EUR", [("update", 100)], delete=True)
    model = MemoryReadModel()
    model.apply([life[-1]])
    assert model.payments == {} and model.tombstones == {document_id("org-a", "p1"): life[-1].paymentversion}
    plan = model.apply(life[:-1])
    assert plan.outcomes == [Outcome.DUPLICATE] * (len(life) - 1)
    assert model.payments == {} and model.stats == {}


def test_an_update_that_keeps_bucket_and_amount_touches_no_statistics():
    v1 = snapshot("p1")
    v2 = v1.model_copy(update={"version": 2, "description": "renamed"})
    plan = plan_batch({}, [new_event(EventType.CREATED, v1)])
    model = MemoryReadModel()
    model.apply([new_event(EventType.CREATED, v1)])
    plan = model.apply([new_event(EventType.UPDATED, v2)])
    assert plan.outcomes == [Outcome.APPLIED] and plan.deltas == {}


def test_buckets_use_the_utc_day_of_created_at_and_the_status():
    late = snapshot("p1", created_at=snapshot("x").created_at.replace(hour=23, minute=30))
    plan = plan_batch({}, [new_event(EventType.CREATED, late)])
    assert list(plan.deltas) == [BucketKey("org-a", utc_day(late.created_at), "EUR", PaymentStatus.PROCESSING)]
    assert utc_day(late.created_at) == "2026-03-01"
