"""Group commit (issue 14): a caller whose wait ends first is answered 202 only once its
command has its own workflow (services/command/temporal/group_commit.py, ``GroupCommit._own``),
on the in-memory engine of tests/unit/fake_temporal.py. Through real servers, with a second
replica and a SIGKILL: tests/integration/command/test_group_commit_durable_202.py."""

from __future__ import annotations

import asyncio

import pytest

from services.command.commands import CommandBatch, CommandResult, CreatePayment, ModifyPayment, Rejected, RejectionKind
from services.command.temporal.group_commit import GroupCommit, QueuedTooLong
from shared.payment import PaymentAction
from tests.support.fake_temporal import BATCHES, Engine

ORG = "org-a"


def create_cmd(command_id: str, payment_id: str) -> CreatePayment:
    return CreatePayment(command_id=command_id, organization_id=ORG, payment_id=payment_id, amount=1250, currency="EUR")


def complete_cmd(command_id: str, payment_id: str) -> ModifyPayment:
    return ModifyPayment(command_id=command_id, organization_id=ORG, action=PaymentAction.COMPLETE,
                         payment_id=payment_id)


async def _busy(engine: Engine, **options: float) -> tuple[GroupCommit, asyncio.Task]:
    """A batcher with one command (c-0) in flight: what is submitted next queues."""
    batcher = GroupCommit(engine, **options)
    blocker = asyncio.create_task(batcher.submit(create_cmd("c-0", "p-0"), None))
    await asyncio.sleep(0)
    return batcher, blocker


async def _in_a_held_batch(engine: Engine, waiting: CreatePayment | ModifyPayment, late: CreatePayment | ModifyPayment,
                           **options: float) -> tuple[GroupCommit, asyncio.Task, asyncio.Task]:
    """``[waiting, late]`` in one batch held open; ``late``'s caller has had its 202."""
    engine.held[BATCHES] = asyncio.Event()
    batcher, blocker = await _busy(engine, **options)
    waiting_call = asyncio.create_task(batcher.submit(waiting, None))
    late_call = asyncio.create_task(batcher.submit(late, 0.05))
    await asyncio.sleep(0)
    engine.gate.set()  # c-0 ends: the two run as one batch
    with pytest.raises(QueuedTooLong):
        await late_call
    assert _batch_of(engine).items == [waiting, late]
    return batcher, blocker, waiting_call


def _batch_of(engine: Engine) -> CommandBatch:
    [batch] = [c for c in engine.calls if isinstance(c, CommandBatch)]
    return batch


async def test_a_queued_command_gets_its_own_workflow_before_its_202_and_leaves_the_queue():
    engine = Engine()
    batcher, blocker = await _busy(engine)
    late = create_cmd("c-1", "p-1")
    with pytest.raises(QueuedTooLong):
        await batcher.submit(late, 0.01)
    assert engine.calls == [create_cmd("c-0", "p-0"), late]  # started: durable before the 202
    assert not engine.waiting_out_its_delay(late)  # nothing else will run it: at once
    assert not batcher.running(ORG, "c-1")  # out of this process's queue: Temporal has it now
    engine.gate.set()
    await blocker
    result = await engine.outcome(late)
    await asyncio.sleep(0.01)  # whatever the batcher would start after the blocker
    assert isinstance(result, CommandResult) and result.payment.id == "p-1"
    assert engine.executions("c-1") == 1 and not any(isinstance(c, CommandBatch) for c in engine.calls)
    assert len(engine.store.events("p-1")) == 1


async def test_a_batched_command_whose_caller_gets_202_waits_for_the_batch_and_has_its_outcome():
    # Run at once, c-1's own workflow would refuse to complete a payment the batch has not
    # created yet, and the batch would then complete it.
    engine = Engine()
    batcher, blocker, create_call = await _in_a_held_batch(engine, create_cmd("c-x", "p-1"), complete_cmd("c-1", "p-1"))
    await asyncio.sleep(0.02)
    assert engine.executions("c-1") == 1 and engine.waiting_out_its_delay(complete_cmd("c-1", "p-1"))
    engine.held[BATCHES].set()
    assert (await create_call).payment.id == "p-1"
    own = await asyncio.wait_for(engine.outcome(complete_cmd("c-1", "p-1")), 1)  # woken, not after its delay
    await blocker
    batched = await engine.workflows[engine.workflow_id(_batch_of(engine))]
    assert own == batched.items[1] and own.payment.version == 2  # the claim: the batch's result, once
    assert engine.executions("c-1") == 1 and len(engine.store.events("p-1")) == 2
    assert not batcher.running(ORG, "c-1")


async def test_a_batch_refusing_a_202d_command_leaves_its_outcome_to_its_own_workflow():
    engine = Engine()
    taken = create_cmd("c-1", "p-1")  # the payment id of c-x, before it in the batch
    batcher, blocker, first_call = await _in_a_held_batch(engine, create_cmd("c-x", "p-1"), taken)
    engine.held[BATCHES].set()
    assert (await first_call).payment.id == "p-1"
    with pytest.raises(Rejected) as refused:
        await asyncio.wait_for(engine.outcome(taken), 1)
    assert refused.value.kind == RejectionKind.CONFLICT
    await blocker
    await asyncio.sleep(0.01)
    assert engine.executions("c-1") == 1  # not run alone again: its own workflow is the record
    assert not batcher.running(ORG, "c-1") and len(engine.store.events("p-1")) == 1


async def test_a_batch_deciding_during_the_start_wakes_the_own_workflow_after_it():
    engine = Engine()
    engine.held[BATCHES] = asyncio.Event()
    batcher, blocker = await _busy(engine, own_delay=30.0)
    late = create_cmd("c-1", "p-1")
    late_call = asyncio.create_task(batcher.submit(late, 0.05))
    other_call = asyncio.create_task(batcher.submit(create_cmd("c-2", "p-2"), None))
    await asyncio.sleep(0)
    engine.slow_starts["c-1"] = asyncio.Event()  # the start RPC of c-1's own workflow hangs
    engine.gate.set()
    await asyncio.sleep(0.1)
    engine.held[BATCHES].set()  # the batch commits both meanwhile
    assert (await other_call).payment.id == "p-2"
    engine.slow_starts["c-1"].set()
    with pytest.raises(QueuedTooLong):
        await late_call
    own = await asyncio.wait_for(engine.outcome(late), 1)
    assert own.payment.id == "p-1" and engine.executions("c-1") == 1 and len(engine.store.events("p-1")) == 1
    await blocker


async def test_if_nobody_wakes_it_the_own_workflow_runs_when_its_delay_ends():
    # This process died with the batch: the orphaned batch completes elsewhere, or not at all.
    engine = Engine()
    late = create_cmd("c-1", "p-1")
    batcher, blocker, _ = await _in_a_held_batch(engine, create_cmd("c-2", "p-2"), late, own_delay=0.1)
    result = await asyncio.wait_for(engine.outcome(late), 1)
    assert result.payment.id == "p-1" and len(engine.store.events("p-1")) == 1
    engine.held[BATCHES].set()  # the batch, finished late, finds the claim
    await blocker
    batched = await engine.workflows[engine.workflow_id(_batch_of(engine))]
    assert batched.items[1] == result and len(engine.store.events("p-1")) == 1


async def test_when_the_start_fails_the_caller_gets_the_error_and_the_command_stays_queued():
    engine = Engine()
    batcher, blocker = await _busy(engine)
    engine.unreachable = True
    late = create_cmd("c-1", "p-1")
    with pytest.raises(ConnectionError):
        await batcher.submit(late, 0.01)
    assert batcher.running(ORG, "c-1") and engine.calls == [create_cmd("c-0", "p-0")]
    engine.unreachable = False
    engine.gate.set()
    await blocker
    await asyncio.sleep(0.01)
    result = await engine.outcome(late)  # the queue's head after the blocker (alone: a batch of one)
    assert result.payment.id == "p-1" and engine.executions("c-1") == 1
    assert not batcher.running(ORG, "c-1") and len(engine.store.events("p-1")) == 1
