"""Property tests of the pure command rules (services/command/domain.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.command.commands import CreatePayment, ModifyPayment, Rejected, RejectionKind
from services.command.domain import decide_create, decide_modify
from shared.events import EventType, parse_event
from shared.money import ISO_4217, MAX_AMOUNT
from shared.payment import ACTION_TARGET, UNDELETABLE, PaymentAction, PaymentSnapshot, PaymentStatus
from tests.support.strategies import contract_metadata, contract_texts

T0 = datetime(2024, 12, 19, 12, 0, tzinfo=UTC)
amounts = st.integers(min_value=1, max_value=MAX_AMOUNT)
currencies = st.sampled_from(sorted(ISO_4217))
texts = contract_texts(40)
metadata = contract_metadata


def create_cmd(**fields) -> CreatePayment:
    values = {"command_id": "c1", "organization_id": "org-a", "payment_id": "p1", "amount": 100,
              "currency": "EUR"} | fields
    return CreatePayment(**values)


@given(amount=amounts, currency=currencies, description=texts, meta=metadata)
def test_create_makes_version_1_processing_and_a_valid_created_event(amount, currency, description, meta):
    decision = decide_create(create_cmd(amount=amount, currency=currency, description=description,
                                        metadata=meta), T0)
    payment = decision.snapshot
    assert (payment.version, payment.status, payment.amount, payment.currency) == (1, "processing", amount, currency)
    assert payment.created_at == payment.updated_at == T0 and payment.deleted_at is None
    event = parse_event(decision.event("/payments/command").to_json_bytes())  # round-trips the contract
    assert event.type is EventType.CREATED and event.paymentversion == 1 and event.payment == payment
    assert all(change.old is None for change in event.data.changes.values())


@pytest.mark.parametrize("actor", ["user-42", "/billing/invoicing", "system:expiry", None])
def test_events_name_the_command_and_its_actor(actor):
    created = decide_create(create_cmd(actor=actor, command_id="create-1"), T0)
    modify = ModifyPayment(command_id="complete-1", organization_id="org-a", actor=actor,
                           action=PaymentAction.COMPLETE, payment_id="p1")
    completed = decide_modify(created.snapshot, modify, T0 + timedelta(seconds=1))
    for decision, command_id in ((created, "create-1"), (completed, "complete-1")):
        event = parse_event(decision.event("/payments/command").to_json_bytes())
        assert (event.actor, event.commandid) == (actor, command_id)
        assert (event.model_dump(exclude_none=True).get("actor")) == actor  # absent, not null, when unknown


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"amount": 0}, "greater than 0"), ({"amount": -1}, "greater than 0"), ({"amount": MAX_AMOUNT + 1}, "less"),
     ({"currency": "XXX"}, "unknown currency"), ({"currency": "eur"}, "unknown currency"),
     ({"description": "x" * 1001}, "at most 1000"), ({"metadata": {"$bad": 1}}, "must not start")],
)
def test_invalid_create_is_a_validation_rejection(fields, message):
    with pytest.raises(Rejected) as caught:
        decide_create(create_cmd(**fields), T0)
    assert caught.value.kind is RejectionKind.VALIDATION and message in caught.value.detail


@given(amount=st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_AMOUNT + 1)))
def test_out_of_range_amounts_never_pass(amount):
    with pytest.raises(Rejected):
        decide_create(create_cmd(amount=amount), T0)


actions = st.sampled_from(list(PaymentAction))
steps = st.lists(
    st.tuples(actions, st.booleans(), st.one_of(st.none(), amounts), st.one_of(st.none(), texts)),
    min_size=1, max_size=12,
)


@settings(max_examples=300)
@given(steps=steps)
def test_any_command_sequence_follows_the_status_machine(steps):
    """Model-based: accepted iff the design says so; every acceptance is version + 1
    with a valid event whose changes are exactly the fields that changed."""
    current = decide_create(create_cmd(), T0).snapshot
    now = T0
    for i, (action, stale, amount, description) in enumerate(steps):
        now += timedelta(seconds=1)
        expected_version = current.version - 1 if stale and current.version > 1 else current.version
        fields = {"amount": amount, "description": description} if action is PaymentAction.UPDATE else {}
        cmd = ModifyPayment(command_id=f"c{i}", organization_id="org-a", payment_id="p1", action=action,
                            expected_version=expected_version, **fields)
        if current.deleted_at is not None:
            outcome = RejectionKind.NOT_FOUND
        elif expected_version != current.version:
            outcome = RejectionKind.VERSION_MISMATCH
        elif action is PaymentAction.UPDATE:
            if current.status is not PaymentStatus.PROCESSING:
                outcome = RejectionKind.ILLEGAL_TRANSITION
            elif amount is None and description is None:
                outcome = RejectionKind.VALIDATION
            else:
                outcome = None
        elif action is PaymentAction.DELETE:
            outcome = RejectionKind.ILLEGAL_TRANSITION if current.status in UNDELETABLE else None
        else:
            legal = {(PaymentStatus.PROCESSING, t) for t in ("completed", "failed", "cancelled")}
            legal.add((PaymentStatus.COMPLETED, "refunded"))
            outcome = None if (current.status, ACTION_TARGET[action]) in legal else RejectionKind.ILLEGAL_TRANSITION
        if outcome is not None:
            with pytest.raises(Rejected) as caught:
                decide_modify(current, cmd, now)
            assert caught.value.kind is outcome
            continue
        decision = decide_modify(current, cmd, now)
        new = decision.snapshot
        assert new.version == current.version + 1 and new.updated_at == now and new.created_at == current.created_at
        event = parse_event(decision.event("/payments/command").to_json_bytes())
        assert event.payment == new and event.paymentversion == new.version
        differing = {f for f in ("amount", "description", "metadata", "status", "deleted_at", "amount_refunded")
                     if getattr(current, f) != getattr(new, f)}
        assert set(event.data.changes) == differing
        expected_type = {PaymentAction.UPDATE: EventType.UPDATED, PaymentAction.DELETE: EventType.DELETED,
                         PaymentAction.REFUND: EventType.REFUNDED}
        assert event.type is expected_type.get(action, EventType.STATUS_CHANGED)
        current = new


def test_another_organizations_payment_is_not_found():
    payment = decide_create(create_cmd(), T0).snapshot
    cmd = ModifyPayment(command_id="c", organization_id="org-b", payment_id="p1", action=PaymentAction.COMPLETE)
    with pytest.raises(Rejected) as caught:
        decide_modify(payment, cmd, T0)
    assert caught.value.kind is RejectionKind.NOT_FOUND


def test_version_mismatch_reports_the_current_version():
    payment = decide_create(create_cmd(), T0).snapshot
    cmd = ModifyPayment(command_id="c", organization_id="org-a", payment_id="p1", action=PaymentAction.CANCEL,
                        expected_version=4)
    with pytest.raises(Rejected) as caught:
        decide_modify(payment, cmd, T0)
    assert caught.value.kind is RejectionKind.VERSION_MISMATCH and caught.value.current_version == 1


# --------------------------------------------------------------------------- refunds

refund_requests = st.lists(st.one_of(st.none(), st.integers(min_value=-5, max_value=1200)), max_size=15)


@settings(max_examples=300)
@given(amount=st.integers(min_value=1, max_value=1000), requests=refund_requests,
       first=st.sampled_from([PaymentAction.COMPLETE, PaymentAction.FAIL, PaymentAction.CANCEL]))
def test_any_sequence_of_refunds_stays_within_the_amount(amount, requests, first):
    """0 <= amount_refunded <= amount after any refunds (None: all that is left), the
    status consistent with it, each refund in the list and in its event, and a refusal
    saying exactly what is left."""
    current = decide_create(create_cmd(amount=amount), T0).snapshot
    current = decide_modify(current, ModifyPayment(command_id="c-first", organization_id="org-a", payment_id="p1",
                                                   action=first), T0).snapshot
    for i, wanted in enumerate(requests):
        cmd = ModifyPayment(command_id=f"r{i}", organization_id="org-a", payment_id="p1",
                            action=PaymentAction.REFUND, amount=wanted, reason=f"reason {i}", actor="user-1")
        left = current.amount - current.amount_refunded
        try:
            decision = decide_modify(current, cmd, T0 + timedelta(seconds=i + 1))
        except Rejected as rejected:
            if current.status not in (PaymentStatus.COMPLETED, PaymentStatus.PARTIALLY_REFUNDED):
                assert rejected.kind is RejectionKind.ILLEGAL_TRANSITION
            elif wanted is not None and wanted <= 0:
                assert rejected.kind is RejectionKind.VALIDATION and "amount" in rejected.detail
            else:
                assert wanted is not None and wanted > left
                assert rejected.kind is RejectionKind.REFUND_EXCEEDS_REMAINING and rejected.remaining == left
                assert f"remaining: {left}" in rejected.detail
            continue
        new = decision.snapshot
        refunded = left if wanted is None else wanted
        assert new.amount_refunded == current.amount_refunded + refunded
        assert 0 < new.amount_refunded <= new.amount
        assert new.status is (PaymentStatus.REFUNDED if new.amount_refunded == new.amount
                              else PaymentStatus.PARTIALLY_REFUNDED)
        assert sum(r.amount for r in new.refunds) == new.amount_refunded
        event = parse_event(decision.event("/payments/command").to_json_bytes())
        assert event.type is EventType.REFUNDED and event.data.refund == new.refunds[-1]
        assert (event.data.refund.amount, event.data.refund.reason, event.data.refund.actor) == (
            refunded, f"reason {i}", "user-1")
        current = new
    assert 0 <= current.amount_refunded <= current.amount
    if current.status in (PaymentStatus.PROCESSING, PaymentStatus.COMPLETED, PaymentStatus.FAILED,
                          PaymentStatus.CANCELLED):
        assert current.amount_refunded == 0


def test_a_refund_id_is_the_same_for_the_same_command():
    paid = decide_modify(decide_create(create_cmd(), T0).snapshot, ModifyPayment(
        command_id="c2", organization_id="org-a", payment_id="p1", action=PaymentAction.COMPLETE), T0).snapshot
    cmd = ModifyPayment(command_id="r", organization_id="org-a", payment_id="p1", action=PaymentAction.REFUND,
                        amount=10)
    first, again = (decide_modify(paid, cmd, T0 + timedelta(seconds=s)).snapshot.refunds[-1].id for s in (1, 2))
    assert first == again


def test_a_refunded_snapshot_from_before_partial_refunds_was_refunded_in_full():
    old = {"id": "p1", "organization_id": "org-a", "amount": 700, "currency": "EUR", "status": "refunded",
           "version": 3, "created_at": T0, "updated_at": T0}
    assert PaymentSnapshot.model_validate(old).amount_refunded == 700
    assert PaymentSnapshot.model_validate({**old, "status": "completed"}).amount_refunded == 0
    with pytest.raises(ValueError, match="exceeds amount"):
        PaymentSnapshot.model_validate({**old, "amount_refunded": 701})
