"""Group commit (issue 14) without servers: the batch handler on the in-memory store
(tests/unit/fakes.py) and the per-process batcher (services/command/temporal/group_commit.py)
driven by what Temporal would run, in process (tests/unit/fake_temporal.py). A caller whose
wait ends first: test_group_commit_durable.py. The same paths through Temporal and
PostgreSQL: tests/integration/command/test_group_commit.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.command import handlers
from services.command.commands import (
    CommandBatch,
    CommandResult,
    CreatePayment,
    ModifyPayment,
    Rejected,
    Rejection,
    RejectionKind,
)
from services.command.temporal.group_commit import GroupCommit
from shared.payment import PaymentAction, PaymentStatus
from tests.support.command_fakes import FakeStore
from tests.support.fake_temporal import Engine

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORG = "org-a"


def clock() -> datetime:
    return T0


def create_cmd(command_id: str, payment_id: str, **fields: Any) -> CreatePayment:
    return CreatePayment(**({"command_id": command_id, "organization_id": ORG, "payment_id": payment_id,
                             "amount": 1250, "currency": "EUR"} | fields))


def modify_cmd(action: PaymentAction, command_id: str, payment_id: str, **fields: Any) -> ModifyPayment:
    return ModifyPayment(command_id=command_id, organization_id=ORG, action=action, payment_id=payment_id, **fields)


async def run_batch(store: FakeStore, *items: CreatePayment | ModifyPayment):
    return await handlers.run_batch(store, CommandBatch(batch_id="b-1", items=list(items)), source="/t", clock=clock)


# --------------------------------------------------------------------------- the batch handler


async def test_a_batch_is_one_transaction_and_each_item_its_own_command():
    store = FakeStore()
    result = await run_batch(store, create_cmd("c-1", "p-1"), create_cmd("c-2", "p-2", amount=7))
    assert store.commits == 1
    assert [item.payment.id for item in result.items] == ["p-1", "p-2"]
    assert store.payment(ORG, "p-2").amount == 7
    assert {key[1] for key in store.committed.commands} == {"c-1", "c-2"}
    assert len(store.events("p-1")) == len(store.events("p-2")) == 1


async def test_items_on_one_payment_run_in_arrival_order():
    store = FakeStore()
    result = await run_batch(
        store, create_cmd("c-1", "p-1"),
        modify_cmd(PaymentAction.UPDATE, "u-1", "p-1", expected_version=1, amount=99),
        modify_cmd(PaymentAction.COMPLETE, "k-1", "p-1", expected_version=2),
    )
    assert [item.payment.version for item in result.items] == [1, 2, 3]
    final = store.payment(ORG, "p-1")
    assert (final.amount, final.status, final.version) == (99, PaymentStatus.COMPLETED, 3)
    assert [e.paymentversion for e in store.events("p-1")] == [1, 2, 3]


async def test_a_refused_item_rolls_back_to_its_savepoint_only():
    store = FakeStore()
    result = await run_batch(
        store, create_cmd("c-1", "p-1"),
        modify_cmd(PaymentAction.REFUND, "r-1", "p-1"),  # refund of a processing payment: 409
        create_cmd("c-2", "p-1"),  # the id is taken: conflict
        modify_cmd(PaymentAction.UPDATE, "u-1", "p-1", expected_version=5, amount=3),  # stale: 412
        create_cmd("c-3", "p-3", currency="XXX"),  # unknown currency: validation
        modify_cmd(PaymentAction.CANCEL, "x-1", "p-1"),
    )
    ok, refund, taken, stale, invalid, cancel = result.items
    assert isinstance(ok, CommandResult) and isinstance(cancel, CommandResult)
    assert [r.kind for r in (refund, taken, stale, invalid)] == [
        RejectionKind.ILLEGAL_TRANSITION, RejectionKind.CONFLICT, RejectionKind.VERSION_MISMATCH,
        RejectionKind.VALIDATION]
    assert stale.current_version == 1
    assert cancel.payment.version == 2 and cancel.payment.status == PaymentStatus.CANCELLED
    # Nothing of a refused item is written: no claim, no event, no payment.
    assert {key[1] for key in store.committed.commands} == {"c-1", "x-1"}
    assert store.payment(ORG, "p-3") is None
    assert [e.paymentversion for e in store.events("p-1")] == [1, 2]


async def test_a_command_already_run_returns_its_first_result_in_a_batch():
    store = FakeStore()
    first = await handlers.create(store, create_cmd("c-1", "p-1"), source="/t", clock=clock)
    result = await run_batch(store, create_cmd("c-1", "p-1"), create_cmd("c-1", "p-1"))
    assert result.items == [first, first]
    assert len(store.events("p-1")) == 1


async def test_a_batch_result_round_trips_its_outcomes():
    store = FakeStore()
    result = await run_batch(store, create_cmd("c-1", "p-1"), create_cmd("c-2", "p-1"))
    again = type(result).model_validate(result.model_dump(mode="json"))
    assert isinstance(again.items[0], CommandResult) and isinstance(again.items[1], Rejection)


async def test_an_infrastructure_error_aborts_the_whole_batch(monkeypatch):
    store = FakeStore()
    original = handlers.domain.decide_create

    def failing(cmd, now):
        if cmd.command_id == "c-2":
            raise ConnectionError("database gone")
        return original(cmd, now)

    monkeypatch.setattr(handlers.domain, "decide_create", failing)
    with pytest.raises(ConnectionError):
        await run_batch(store, create_cmd("c-1", "p-1"), create_cmd("c-2", "p-2"))
    assert store.commits == 0 and store.payment(ORG, "p-1") is None


command_ids = st.sampled_from([f"c-{i}" for i in range(6)])
payment_ids = st.sampled_from(["p-1", "p-2", "p-3", "p-4"])
items = st.one_of(
    st.builds(lambda c, p, amount, currency: create_cmd(c, p, amount=amount, currency=currency),
              command_ids, payment_ids, st.sampled_from([1250, 7, 0]), st.sampled_from(["EUR", "EUR", "XXX"])),
    st.builds(lambda action, c, p: modify_cmd(action, c, p, **({"amount": 99} if action is PaymentAction.UPDATE else {})),
              st.sampled_from(list(PaymentAction)), command_ids, payment_ids),
)


async def _alone(store: FakeStore, item: CreatePayment | ModifyPayment) -> CommandResult | Rejection:
    try:
        if isinstance(item, CreatePayment):
            return await handlers.create(store, item, source="/t", clock=clock)
        return await handlers.modify(store, item, source="/t", clock=clock)
    except Rejected as rejected:
        return Rejection.of(rejected)


@settings(max_examples=150, deadline=None)
@given(before=st.lists(items, max_size=4), batch=st.lists(items, min_size=1, max_size=10))
def test_a_batch_does_exactly_what_its_items_do_alone_in_arrival_order(before, batch):
    """Whatever the mix (independent creates, which run together and set-based; replays;
    taken ids; refusals; several commands on one payment): the same outcome per item and
    the same payments, command results and events as running each item alone, in order."""

    async def run() -> None:
        batched, alone = FakeStore(), FakeStore()
        for item in before:
            await _alone(batched, item)
            await _alone(alone, item)
        got = (await run_batch(batched, *batch)).items
        assert got == [await _alone(alone, item) for item in batch]
        assert batched.committed.payments == alone.committed.payments
        assert batched.committed.commands == alone.committed.commands
        for payment_id in ("p-1", "p-2", "p-3", "p-4"):
            assert ([(e.type, e.paymentversion, e.payment) for e in batched.events(payment_id)]
                    == [(e.type, e.paymentversion, e.payment) for e in alone.events(payment_id)])

    asyncio.run(run())


# --------------------------------------------------------------------------- the batcher


async def _settled(*tasks: asyncio.Task) -> list[Any]:
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_an_idle_batcher_starts_a_command_at_once_and_alone():
    engine = Engine()
    engine.gate.set()
    batcher = GroupCommit(engine)
    result = await batcher.submit(create_cmd("c-1", "p-1"), None)
    assert result.payment.id == "p-1" and engine.calls == [create_cmd("c-1", "p-1")]


async def test_commands_arriving_during_an_execution_run_as_one_batch_with_their_own_outcomes():
    engine = Engine()
    batcher = GroupCommit(engine)
    first = asyncio.create_task(batcher.submit(create_cmd("c-0", "p-0"), None))
    await asyncio.sleep(0)
    queued = [create_cmd("c-1", "p-1"), create_cmd("c-2", "p-1"),  # the second is refused: id taken
              modify_cmd(PaymentAction.COMPLETE, "k-1", "p-1", expected_version=1),
              create_cmd("c-3", "p-3")]
    tasks = [asyncio.create_task(batcher.submit(cmd, None)) for cmd in queued]
    await asyncio.sleep(0)
    assert batcher.running(ORG, "c-2") and not batcher.running(ORG, "c-0")
    engine.gate.set()
    outcomes = await _settled(first, *tasks)
    assert outcomes[0].payment.id == "p-0"
    created, taken, completed, other = outcomes[1:]
    assert created.payment.version == 1 and completed.payment.status == PaymentStatus.COMPLETED
    assert isinstance(taken, Rejected) and taken.kind == RejectionKind.CONFLICT
    assert other.payment.id == "p-3"
    # c-0 alone, then one batch of the four, then the refused one alone (its own record).
    assert [type(c).__name__ for c in engine.calls] == ["CreatePayment", "CommandBatch", "CreatePayment"]
    assert engine.calls[1].items == queued and engine.calls[2] == queued[1]
    assert not batcher.running(ORG, "c-2")


async def test_batches_are_bounded_in_items_and_bytes():
    engine = Engine()
    one = len(create_cmd("c-1", "p-1", description="x" * 400).model_dump_json())
    batcher = GroupCommit(engine, max_items=3, max_bytes=5 * one)
    blocker = asyncio.create_task(batcher.submit(create_cmd("c-0", "p-0"), None))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(batcher.submit(create_cmd(f"c-{n}", f"p-{n}", description="x" * 400), None))
             for n in range(1, 8)]
    huge = asyncio.create_task(batcher.submit(
        create_cmd("c-9", "p-9", metadata={f"k{n}": "y" * 400 for n in range(8)}), None))
    await asyncio.sleep(0)
    engine.gate.set()
    await _settled(blocker, *tasks, huge)
    sizes = [len(c.items) if isinstance(c, CommandBatch) else 1 for c in engine.calls]
    assert sizes == [1, 3, 3, 1, 1]  # by count, then the rest; the over-sized command alone
    assert all(engine.store.payment(ORG, f"p-{n}") is not None for n in (*range(8), 9))


async def _blocked_then_batched(engine: Engine, batcher: GroupCommit, count: int) -> None:
    """One command alone, then ``count`` that queued behind it as one batch."""
    engine.gate.clear()
    tasks = [asyncio.create_task(batcher.submit(create_cmd("c-0", "p-0"), None))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(batcher.submit(create_cmd(f"c-{n}", f"p-{n}"), None)) for n in range(1, count + 1)]
    await asyncio.sleep(0)
    engine.gate.set()
    await _settled(*tasks)


def _sizes(engine: Engine) -> list[int]:
    return [len(c.items) if isinstance(c, CommandBatch) else 1 for c in engine.calls]


async def test_after_a_batch_the_queue_is_held_until_as_big_again():
    engine = Engine(delay=0.05)
    batcher = GroupCommit(engine, max_hold=10.0)  # bounded by the batch's own duration
    await _blocked_then_batched(engine, batcher, 3)
    assert _sizes(engine) == [1, 3]
    # Its three callers come back: the first does not run alone, the three run together.
    again = [asyncio.create_task(batcher.submit(create_cmd(f"d-{n}", f"q-{n}"), None)) for n in (1, 2, 3)]
    await _settled(*again)
    assert _sizes(engine) == [1, 3, 3]


async def test_a_hold_ends_after_the_batch_duration_and_a_lone_command_never_waits():
    engine = Engine(delay=0.05)
    batcher = GroupCommit(engine, max_hold=0.02)
    await _blocked_then_batched(engine, batcher, 3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.submit(create_cmd("late", "p-late"), None)  # held (1 of 3) for max_hold
    assert 0.06 <= loop.time() - started < 0.5
    started = loop.time()
    await batcher.submit(create_cmd("lone", "p-lone"), None)  # after a lone command: no hold
    assert _sizes(engine)[-2:] == [1, 1] and loop.time() - started < 0.065


async def test_a_failed_batch_runs_its_commands_alone():
    engine = Engine()
    real = engine.run

    async def run(command: Any, wait_timeout: float | None) -> Any:
        if isinstance(command, CommandBatch):
            engine.calls.append(command)
            raise RuntimeError("the batch workflow failed")
        return await real(command, wait_timeout)

    engine.run = run  # type: ignore[method-assign]
    batcher = GroupCommit(engine)
    blocker = asyncio.create_task(batcher.submit(create_cmd("c-0", "p-0"), None))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(batcher.submit(create_cmd(f"c-{n}", f"p-{n}"), None)) for n in (1, 2)]
    await asyncio.sleep(0)
    engine.gate.set()
    outcomes = await _settled(blocker, *tasks)
    assert [o.payment.id for o in outcomes] == ["p-0", "p-1", "p-2"]
