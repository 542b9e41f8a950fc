"""Payment deadlines, pure and on the in-memory store: the rule every door applies
(ExpiryPolicy), the bodies, the timers a command's result schedules, and the expiry
itself (handlers.expire), which expires a payment at most once and only at its deadline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.command import handlers
from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    BulkItemResult,
    CommandBatch,
    CommandBatchResult,
    CommandResult,
    CreatePayment,
    ExpiryOutcome,
    ExpiryTimer,
    ModifyPayment,
    Rejection,
    RejectionKind,
    expiry_timers,
)
from services.command.entrypoints.bodies import CreatePaymentRequest, UpdatePaymentRequest
from services.command.entrypoints.intake_contract import InvalidCommand, parse_command
from services.facade import with_deadlines
from shared.events import EventType, system_actor
from shared.expiry import ExpiryPolicy
from shared.payment import PaymentAction, PaymentStatus
from shared.settings import Settings
from tests.support.builders import snapshot
from tests.support.command_fakes import FakeStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAX = timedelta(days=30)
POLICY = ExpiryPolicy(MAX)
ORG = "org-a"


# --------------------------------------------------------------------------- the rule


@given(st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)))
def test_a_deadline_is_accepted_exactly_when_in_the_future_and_within_the_maximum(ahead: timedelta) -> None:
    wanted = NOW + ahead
    if timedelta(0) < ahead <= MAX:
        assert POLICY.check(wanted, NOW) == wanted
    else:
        with pytest.raises(ValueError, match="in the future|at most"):
            POLICY.check(wanted, NOW)


def test_a_deadline_in_another_zone_is_the_same_instant() -> None:
    paris = NOW.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")) + timedelta(minutes=5)
    assert POLICY.check(paris, NOW) == NOW + timedelta(minutes=5)


def test_a_naive_deadline_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        POLICY.check(NOW.replace(tzinfo=None) + timedelta(hours=1), NOW)


def test_the_default_applies_only_to_a_create_without_one() -> None:
    policy = ExpiryPolicy(MAX, timedelta(hours=2))
    assert policy.for_create(None, NOW) == NOW + timedelta(hours=2)
    assert policy.for_create(NOW + timedelta(minutes=1), NOW) == NOW + timedelta(minutes=1)
    assert POLICY.for_create(None, NOW) is None


def test_the_settings_give_the_policy_and_refuse_a_default_beyond_the_maximum() -> None:
    settings = Settings(payment_default_ttl_seconds=60, payment_max_ttl_seconds=3600)
    assert settings.expiry_policy() == ExpiryPolicy(timedelta(hours=1), timedelta(minutes=1))
    with pytest.raises(ValidationError, match="DEFAULT_TTL"):
        Settings(payment_default_ttl_seconds=7200, payment_max_ttl_seconds=3600)


@pytest.mark.parametrize(("value", "message"), [
    (1_900_000_000, "RFC 3339"), ("2026-03-01T12:00:00", "time zone"), ("tomorrow", "datetime"),
    ("2026-02-30T12:00:00Z", "datetime"), (None, None),
])
def test_the_bodies_take_rfc_3339_text_with_a_zone(value: Any, message: str | None) -> None:
    body = {"amount": 100, "currency": "EUR", "expires_at": value}
    if message is None:
        assert CreatePaymentRequest.model_validate(body).expires_at is None
        return
    with pytest.raises(ValidationError) as failed:
        CreatePaymentRequest.model_validate(body)
    (error,) = failed.value.errors()
    assert error["loc"][0] == "expires_at" and message in error["msg"], error
    with pytest.raises(ValidationError):
        UpdatePaymentRequest.model_validate({"expires_at": value})


def test_an_update_may_move_only_the_deadline() -> None:
    assert UpdatePaymentRequest.model_validate({"expires_at": "2026-03-01T13:00:00+01:00"}).expires_at is not None


# --------------------------------------------------------------------------- the intake


def _command(kind: str = "create", data: dict[str, Any] | None = None, **fields: Any) -> bytes:
    body = {"specversion": "1.0", "id": "cmd-1", "source": "/billing", "organizationid": ORG,
            "type": f"com.gyroscops.payment.command.{kind}", "data": data, **fields}
    return json.dumps(body).encode()


def test_the_intake_applies_the_same_rule() -> None:
    ahead = (NOW + timedelta(hours=1)).isoformat()
    cmd = parse_command(_command(data={"amount": 1, "currency": "EUR", "expires_at": ahead}), POLICY, NOW)
    assert isinstance(cmd, CreatePayment) and cmd.expires_at == NOW + timedelta(hours=1)
    defaulted = parse_command(_command(data={"amount": 1, "currency": "EUR"}), ExpiryPolicy(MAX, timedelta(60)), NOW)
    assert defaulted.expires_at == NOW + timedelta(60)  # type: ignore[union-attr]
    moved = parse_command(_command("update", {"expires_at": ahead}, subject="p-1"), POLICY, NOW)
    assert isinstance(moved, ModifyPayment) and moved.expires_at == NOW + timedelta(hours=1)


def test_the_facade_applies_the_same_rule() -> None:
    def create(i: int, expires_at: datetime | None = None) -> CreatePayment:
        return CreatePayment(command_id=f"c{i}", organization_id="org-a", payment_id=f"p{i}", amount=1,
                             currency="EUR", expires_at=expires_at)

    defaulted = with_deadlines(create(1), ExpiryPolicy(MAX, timedelta(60)), NOW)
    assert defaulted.expires_at == NOW + timedelta(60)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="^expires_at: must be in the future"):
        with_deadlines(create(1, NOW), POLICY, NOW)
    move = ModifyPayment(command_id="c2", organization_id="org-a", payment_id="p1", action=PaymentAction.UPDATE,
                         expires_at=NOW + MAX + timedelta(seconds=1))
    with pytest.raises(ValueError, match="^expires_at: must be at most"):
        with_deadlines(move, POLICY, NOW)
    bulk = BulkCreatePayments(command_id="c3", organization_id="org-a",
                              items=[create(1), create(2, NOW - timedelta(seconds=1))])
    with pytest.raises(ValueError, match=r"^items\.1\.expires_at: must be in the future"):
        with_deadlines(bulk, POLICY, NOW)


@pytest.mark.parametrize(("kind", "data"), [
    ("create", {"amount": 1, "currency": "EUR", "expires_at": "2026-03-01T11:00:00Z"}),
    ("create", {"amount": 1, "currency": "EUR", "expires_at": "2026-06-01T11:00:00Z"}),
    ("update", {"expires_at": "2026-03-01T11:59:59Z"}),
])
def test_the_intake_answers_a_bad_deadline_with_a_problem_naming_it(kind: str, data: dict[str, Any]) -> None:
    with pytest.raises(InvalidCommand) as refused:
        parse_command(_command(kind, data, subject="p-1"), POLICY, NOW)
    assert refused.value.detail.startswith("expires_at: ")


# --------------------------------------------------------------------------- the timers


def _create(pid: str, deadline: datetime | None) -> CreatePayment:
    return CreatePayment(command_id=f"c-{pid}", organization_id=ORG, payment_id=pid, amount=100, currency="EUR",
                         expires_at=deadline)


def _result(pid: str, deadline: datetime | None, version: int = 1) -> CommandResult:
    return CommandResult(command_id=f"c-{pid}", payment=snapshot(pid, ORG, version=version).model_copy(
        update={"expires_at": deadline}))


def test_the_timers_of_a_result_are_its_deadlines_set_or_moved() -> None:
    d = NOW + timedelta(hours=1)
    assert expiry_timers(_create("p-1", d), _result("p-1", d)) == [
        ExpiryTimer(organization_id=ORG, payment_id="p-1", expires_at=d, version=1)]
    assert expiry_timers(_create("p-1", None), _result("p-1", None)) == []
    update = ModifyPayment(command_id="u-1", organization_id=ORG, payment_id="p-2", action=PaymentAction.UPDATE)
    assert expiry_timers(update.model_copy(update={"description": "x"}), _result("p-2", d, 2)) == []  # not moved
    assert expiry_timers(update.model_copy(update={"expires_at": d}), _result("p-2", d, 3))[0].version == 3
    batch = CommandBatch(batch_id="b", items=[_create("p-3", d), _create("p-4", d), update.model_copy(
        update={"expires_at": d})])
    outcome = CommandBatchResult(batch_id="b", items=[
        _result("p-3", d), Rejection(kind=RejectionKind.CONFLICT, detail="taken"), _result("p-2", d, 4)])
    assert [(t.payment_id, t.version) for t in expiry_timers(batch, outcome)] == [("p-3", 1), ("p-2", 4)]
    bulk = BulkCreatePayments(command_id="bulk", organization_id=ORG, items=[_create("p-5", d), _create("p-6", d)])
    done = BulkCreateResult(command_id="bulk", items=[
        BulkItemResult(index=0, rejection=Rejection(kind=RejectionKind.CONFLICT, detail="taken")),
        BulkItemResult(index=1, payment=_result("p-6", d).payment)])
    assert [t.payment_id for t in expiry_timers(bulk, done)] == ["p-6"]


# --------------------------------------------------------------------------- the expiry


async def _store_with(deadline: datetime | None) -> FakeStore:
    store = FakeStore()
    await handlers.create(store, _create("p-1", deadline), source="/test", clock=lambda: NOW)
    return store


def _timer(deadline: datetime) -> ExpiryTimer:
    return ExpiryTimer(organization_id=ORG, payment_id="p-1", expires_at=deadline, version=1)


async def _expire(store: FakeStore, deadline: datetime, at: datetime, timer: ExpiryTimer | None = None) -> ExpiryOutcome:
    return await handlers.expire(store, [timer or _timer(deadline)], source="/test", clock=lambda: at)


async def test_a_processing_payment_expires_once_at_its_deadline() -> None:
    deadline = NOW + timedelta(hours=1)
    store = await _store_with(deadline)
    assert await _expire(store, deadline, deadline - timedelta(seconds=1)) == ExpiryOutcome(early=[_timer(deadline)])
    (expired,) = (await _expire(store, deadline, deadline)).expired
    assert expired.status is PaymentStatus.EXPIRED
    assert await _expire(store, deadline, deadline + timedelta(seconds=5)) == ExpiryOutcome()  # a second timer
    created, event = store.events("p-1")
    assert (event.type, event.actor, event.commandid) == (EventType.STATUS_CHANGED, system_actor("expiry"), None)
    assert event.data.changes["status"].model_dump() == {"old": "processing", "new": "expired"}
    assert store.payment(ORG, "p-1").version == 2  # type: ignore[union-attr]


async def test_the_timer_of_a_moved_deadline_expires_nothing() -> None:
    old, new = NOW + timedelta(hours=1), NOW + timedelta(hours=3)
    store = await _store_with(old)
    moved = await handlers.modify(store, ModifyPayment(
        command_id="u-1", organization_id=ORG, payment_id="p-1", action=PaymentAction.UPDATE, expires_at=new),
        source="/test", clock=lambda: NOW)
    assert moved.payment.expires_at == new
    assert store.events("p-1")[-1].data.changes["expires_at"].new == new.isoformat()
    assert await _expire(store, old, new + timedelta(hours=1)) == ExpiryOutcome()
    assert store.payment(ORG, "p-1").status is PaymentStatus.PROCESSING  # type: ignore[union-attr]
    assert len((await _expire(store, new, new)).expired) == 1


@pytest.mark.parametrize("action", [PaymentAction.COMPLETE, PaymentAction.FAIL, PaymentAction.CANCEL,
                                    PaymentAction.DELETE])
async def test_a_payment_settled_before_its_deadline_is_never_touched(action: PaymentAction) -> None:
    deadline = NOW + timedelta(hours=1)
    store = await _store_with(deadline)
    await handlers.modify(store, ModifyPayment(command_id="m-1", organization_id=ORG, payment_id="p-1", action=action),
                          source="/test", clock=lambda: NOW)
    before = store.events("p-1")
    assert await _expire(store, deadline, deadline + timedelta(minutes=1)) == ExpiryOutcome()
    assert store.events("p-1") == before


async def test_another_organizations_timer_finds_nothing() -> None:
    deadline = NOW + timedelta(hours=1)
    store = await _store_with(deadline)
    other = _timer(deadline).model_copy(update={"organization_id": "org-b"})
    assert await _expire(store, deadline, deadline, other) == ExpiryOutcome()
