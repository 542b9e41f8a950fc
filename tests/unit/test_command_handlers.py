"""The command handlers (services/command/handlers.py) against the in-memory store
(tests/unit/fakes.py): no server, milliseconds per test. The same paths against
PostgreSQL and Temporal: tests/integration/command/."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.command import handlers
from services.command.commands import BulkCreatePayments, BulkCreateResult, CreatePayment, ModifyPayment, Rejected, RejectionKind
from services.command.entrypoints.http.schemas import BatchResult
from shared.events import EventType
from shared.payment import TRANSITIONS, PaymentAction, PaymentStatus
from tests.support.command_fakes import FakeStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORG = "org-a"


def clock() -> datetime:
    return T0


def create_cmd(command_id: str = "c-1", payment_id: str = "p-1", **fields) -> CreatePayment:
    return CreatePayment(**({"command_id": command_id, "organization_id": ORG, "payment_id": payment_id,
                             "amount": 1250, "currency": "EUR"} | fields))


def modify_cmd(action: PaymentAction, command_id: str, payment_id: str = "p-1", **fields) -> ModifyPayment:
    return ModifyPayment(command_id=command_id, organization_id=ORG, action=action, payment_id=payment_id, **fields)


async def create(store: FakeStore, cmd: CreatePayment):
    return await handlers.create(store, cmd, source="/test", clock=clock)


async def modify(store: FakeStore, cmd: ModifyPayment):
    return await handlers.modify(store, cmd, source="/test", clock=clock)


async def rejected(call) -> Rejected:
    with pytest.raises(Rejected) as caught:
        await call
    return caught.value


async def test_create_writes_the_payment_its_event_and_its_result_together():
    store = FakeStore()
    result = await create(store, create_cmd())
    assert (result.payment.version, result.payment.status) == (1, PaymentStatus.PROCESSING)
    assert store.payment(ORG, "p-1") == result.payment
    [event] = store.events("p-1")
    assert event.type is EventType.CREATED and event.payment == result.payment
    assert store.committed.commands[(ORG, "c-1")]["result"]["payment"]["id"] == "p-1"


async def test_a_replayed_command_id_returns_the_first_result_and_writes_nothing():
    store = FakeStore()
    first = await create(store, create_cmd())
    again = await create(store, create_cmd(amount=999))  # same command id, as a retried activity
    assert again == first and len(store.events("p-1")) == 1


async def test_a_taken_payment_id_is_a_conflict_and_writes_nothing():
    store = FakeStore()
    await create(store, create_cmd())
    refusal = await rejected(create(store, create_cmd(command_id="c-2")))
    assert refusal.kind is RejectionKind.CONFLICT
    assert len(store.events("p-1")) == 1 and (ORG, "c-2") not in store.committed.commands  # rolled back


async def test_a_stale_expected_version_is_a_version_mismatch_naming_the_current_one():
    store = FakeStore()
    await create(store, create_cmd())
    await modify(store, modify_cmd(PaymentAction.UPDATE, "u-1", amount=1500))
    refusal = await rejected(modify(store, modify_cmd(PaymentAction.COMPLETE, "k-1", expected_version=1)))
    assert (refusal.kind, refusal.current_version) == (RejectionKind.VERSION_MISMATCH, 2)
    assert store.payment(ORG, "p-1").status is PaymentStatus.PROCESSING


async def test_an_illegal_transition_is_refused_with_the_current_version():
    store = FakeStore()
    await create(store, create_cmd())
    refusal = await rejected(modify(store, modify_cmd(PaymentAction.REFUND, "r-1")))
    assert (refusal.kind, refusal.current_version) == (RejectionKind.ILLEGAL_TRANSITION, 1)
    assert len(store.events("p-1")) == 1


async def test_a_missing_payment_is_not_found():
    refusal = await rejected(modify(FakeStore(), modify_cmd(PaymentAction.COMPLETE, "k-1", payment_id="nope")))
    assert refusal.kind is RejectionKind.NOT_FOUND


async def test_a_lost_race_with_an_expected_version_is_a_version_mismatch():
    store = FakeStore()
    await create(store, create_cmd())
    store.concurrent_updates = 1
    refusal = await rejected(modify(store, modify_cmd(PaymentAction.COMPLETE, "k-1", expected_version=1)))
    assert (refusal.kind, refusal.current_version) == (RejectionKind.VERSION_MISMATCH, 2)


async def test_a_lost_race_without_expected_version_is_retried_on_the_fresh_payment():
    store = FakeStore()
    await create(store, create_cmd())
    store.concurrent_updates = 2
    result = await modify(store, modify_cmd(PaymentAction.COMPLETE, "k-1"))
    assert (result.payment.version, result.payment.status) == (4, PaymentStatus.COMPLETED)  # 1 + 2 others + this


async def test_a_payment_that_keeps_changing_is_a_conflict_after_the_retries():
    store = FakeStore()
    await create(store, create_cmd())
    store.concurrent_updates = handlers.MAX_RACE_RETRIES
    refusal = await rejected(modify(store, modify_cmd(PaymentAction.COMPLETE, "k-1")))
    assert refusal.kind is RejectionKind.CONFLICT
    assert store.payment(ORG, "p-1").status is PaymentStatus.PROCESSING


async def test_a_bulk_create_answers_each_item_and_one_bad_item_spoils_nothing_else():
    store = FakeStore()
    items = [create_cmd("b.0", "p-0"), create_cmd("b.1", "p-1", currency="XXX"), create_cmd("b.2", "p-2")]
    result = await handlers.bulk_create(store, BulkCreatePayments(command_id="b", organization_id=ORG, items=items),
                                        source="/test", clock=clock)
    assert [i.payment is not None for i in result.items] == [True, False, True]
    assert result.items[1].rejection.kind is RejectionKind.VALIDATION
    assert [p.id for p in result.written()] == ["p-0", "p-2"] and store.payment(ORG, "p-1") is None
    view = BatchResult.of(result)  # the HTTP edge's mapping
    assert [r.status for r in view.results] == [201, 422, 201]
    assert view.results[1].problem.type.endswith("/validation") and view.results[0].payment.formatted_amount


def test_a_bulk_result_recorded_before_the_service_layer_dropped_http_still_reads():
    """Temporal history holds what older workflows returned: the HTTP view (status/problem)."""
    old = {"command_id": "b", "consistency_token": None, "results": [
        {"index": 0, "status": 201, "payment": {
            "id": "p-0", "organization_id": ORG, "user_id": None, "amount": 1250, "currency": "EUR",
            "formatted_amount": "12.50 EUR", "status": "processing", "description": "", "metadata": {},
            "version": 1, "created_at": T0.isoformat(), "updated_at": T0.isoformat(), "deleted_at": None}},
        {"index": 1, "status": 409, "problem": {
            "type": "https://gyroscops.com/problems/illegal-transition", "title": "Conflict", "status": 409,
            "detail": "taken", "current_version": 3}},
    ]}
    result = BulkCreateResult.model_validate(old)
    assert result.items[0].payment.id == "p-0"
    assert (result.items[1].rejection.kind, result.items[1].rejection.current_version) == (
        RejectionKind.ILLEGAL_TRANSITION, 3)
    assert BulkCreateResult.model_validate(result.model_dump(mode="json")) == result


commands = st.lists(st.sampled_from(list(PaymentAction)) | st.just("create"), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(commands)
def test_any_command_sequence_keeps_version_equal_to_events_and_follows_the_status_machine(sequence):
    """Whatever is sent, applied commands are exactly the events, and each status change
    is one the status machine allows."""

    async def run() -> None:
        store = FakeStore()
        for n, action in enumerate(sequence):
            try:
                if action == "create":
                    await create(store, create_cmd(command_id=f"c-{n}"))
                else:
                    fields = {"amount": 100 + n} if action is PaymentAction.UPDATE else {}
                    await modify(store, modify_cmd(action, f"m-{n}", **fields))
            except Rejected:
                pass
            payment, events = store.payment(ORG, "p-1"), store.events("p-1")
            assert (payment.version if payment else 0) == len(events)
        statuses = [e.payment.status for e in store.events("p-1")]
        for before, after in zip(statuses, statuses[1:], strict=False):
            assert after == before or after in TRANSITIONS[before]

    asyncio.run(run())

