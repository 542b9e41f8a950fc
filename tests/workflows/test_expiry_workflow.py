"""The PaymentExpiry timer on Temporal's time-skipping test server: hours-long deadlines
pass in milliseconds. The expiry activity is mocked (its rule against PostgreSQL, and the
scheduling's id policies on a real Temporal server, which start delays need:
tests/integration/command/test_expiry.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from services.command.commands import CommandResult, ExpiryOutcome, ExpiryTimer, ExpiryTimers
from services.command.temporal import registry
from services.command.temporal.activities import CommandActivities
from services.command.temporal.workflows import PaymentExpiryWorkflow
from shared.payment import PaymentStatus
from tests.support.builders import snapshot
from tests.support.temporal_env import mocked, time_skipping, worker
from tests.support.workflow_scenarios import scenarios


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as environment:  # deadlines are relative to its clock
        yield environment


def _expire(timer: ExpiryTimer) -> ExpiryOutcome:
    payment = snapshot(timer.payment_id, timer.organization_id, status=PaymentStatus.EXPIRED, version=2)
    return ExpiryOutcome(expired=payment)


async def _timer(env: WorkflowEnvironment, hours: float, version: int = 1) -> ExpiryTimer:
    return ExpiryTimer(organization_id="org-1", payment_id=f"pay-{uuid.uuid4().hex[:8]}",
                       expires_at=await env.get_current_time() + timedelta(hours=hours), version=version)


async def test_an_hours_long_deadline_fires_once_at_the_deadline(env: WorkflowEnvironment) -> None:
    timer = await _timer(env, 8)
    expire = mocked(CommandActivities.expire, _expire)
    async with worker(env, registry.WORKFLOWS, [expire]) as queue:
        outcome = await env.client.execute_workflow(PaymentExpiryWorkflow.run, timer, id=f"t-{uuid.uuid4()}",
                                                    task_queue=queue)
    assert outcome.expired is not None and outcome.expired.status is PaymentStatus.EXPIRED
    assert expire.calls == [timer]
    assert await env.get_current_time() >= timer.expires_at


async def test_a_move_of_a_later_version_replaces_the_deadline_and_an_older_one_is_ignored(
        env: WorkflowEnvironment) -> None:
    timer = await _timer(env, 2)
    moved = timer.model_copy(update={"expires_at": timer.expires_at + timedelta(hours=10), "version": 3})
    stale = timer.model_copy(update={"expires_at": timer.expires_at - timedelta(hours=1), "version": 2})
    expire = mocked(CommandActivities.expire, _expire)
    async with worker(env, registry.WORKFLOWS, [expire]) as queue:
        handle = await env.client.start_workflow(PaymentExpiryWorkflow.run, timer, id=f"t-{uuid.uuid4()}",
                                                 task_queue=queue)
        await handle.signal(PaymentExpiryWorkflow.move, moved)
        await handle.signal(PaymentExpiryWorkflow.move, stale)  # arrives late: an older version
        await handle.result()
    assert expire.calls == [moved]
    assert await env.get_current_time() >= moved.expires_at


async def test_a_deadline_moved_without_a_signal_is_found_at_the_old_one_and_waited_for(
        env: WorkflowEnvironment) -> None:
    timer = await _timer(env, 1)
    later = timer.expires_at + timedelta(hours=5)
    answers = iter([ExpiryOutcome(wait_until=later), _expire(timer)])
    expire = mocked(CommandActivities.expire, lambda _: next(answers))
    async with worker(env, registry.WORKFLOWS, [expire]) as queue:
        await env.client.execute_workflow(PaymentExpiryWorkflow.run, timer, id=f"t-{uuid.uuid4()}", task_queue=queue)
    assert [c.expires_at for c in expire.calls] == [timer.expires_at, later]


async def test_a_settled_payment_ends_its_timer_without_expiring(env: WorkflowEnvironment) -> None:
    timer = await _timer(env, 3)
    expire = mocked(CommandActivities.expire, lambda _: ExpiryOutcome())
    async with worker(env, registry.WORKFLOWS, [expire]) as queue:
        outcome = await env.client.execute_workflow(PaymentExpiryWorkflow.run, timer, id=f"t-{uuid.uuid4()}",
                                                    task_queue=queue)
    assert outcome == ExpiryOutcome() and len(expire.calls) == 1


async def test_a_create_with_a_deadline_schedules_its_timer_after_its_commit(env: WorkflowEnvironment) -> None:
    s = next(s for s in scenarios() if s.name == "CreatePayment.with-deadline")
    execute, schedule = s.activities
    async with worker(env, registry.WORKFLOWS, s.activities) as queue:
        result = await env.client.execute_workflow(s.workflow.run, s.input, id=f"wf-{uuid.uuid4()}", task_queue=queue)
    assert isinstance(result, CommandResult) and result.payment.expires_at == s.input.expires_at
    assert len(execute.calls) == 1
    assert schedule.calls == [ExpiryTimers(timers=[ExpiryTimer(
        organization_id=s.input.organization_id, payment_id=s.input.payment_id, expires_at=s.input.expires_at,
        version=1)])]
