"""The PaymentExpiry timers on Temporal's time-skipping test server: hours-long deadlines
pass in milliseconds. The expiry activity is mocked (its rule against PostgreSQL, and the
scheduling's id policies on a real Temporal server, which start delays need:
tests/integration/test_expiry_end_to_end.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from services.command.commands import CommandResult, ExpiryOutcome, ExpiryTimer, ExpiryTimers
from services.command.temporal import expiry, registry
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


def _expire(timers: ExpiryTimers) -> ExpiryOutcome:
    return ExpiryOutcome(expired=[snapshot(t.payment_id, t.organization_id, status=PaymentStatus.EXPIRED, version=2)
                                  for t in timers.timers])


async def _timers(env: WorkflowEnvironment, hours: float, count: int = 2) -> ExpiryTimers:
    deadline = await env.get_current_time() + timedelta(hours=hours)
    return ExpiryTimers(timers=[ExpiryTimer(organization_id=f"org-{i % 2}", payment_id=f"pay-{uuid.uuid4().hex[:8]}",
                                            expires_at=deadline - timedelta(milliseconds=i), version=1)
                                for i in range(count)])


async def _run(env: WorkflowEnvironment, timers: ExpiryTimers, expire: object) -> ExpiryOutcome:
    async with worker(env, registry.WORKFLOWS, [expire]) as queue:
        return await env.client.execute_workflow(PaymentExpiryWorkflow.run, timers, id=f"t-{uuid.uuid4()}",
                                                 task_queue=queue)


async def test_hours_long_deadlines_fire_once_at_the_latest_of_their_second(env: WorkflowEnvironment) -> None:
    timers = await _timers(env, 8, count=3)
    expire = mocked(CommandActivities.expire, _expire)
    outcome = await _run(env, timers, expire)
    assert [p.id for p in outcome.expired] == [t.payment_id for t in timers.timers]
    assert expire.calls == [timers]
    assert await env.get_current_time() >= max(t.expires_at for t in timers.timers)


async def test_a_timer_early_on_the_databases_clock_is_tried_again_and_only_it(env: WorkflowEnvironment) -> None:
    timers = await _timers(env, 1)
    first, second = timers.timers
    answers = iter([ExpiryOutcome(expired=_expire(ExpiryTimers(timers=[first])).expired, early=[second]),
                    _expire(ExpiryTimers(timers=[second]))])
    expire = mocked(CommandActivities.expire, lambda _: next(answers))
    outcome = await _run(env, timers, expire)
    assert expire.calls == [timers, ExpiryTimers(timers=[second])]
    assert [p.id for p in outcome.expired] == [first.payment_id, second.payment_id]


async def test_timers_that_expire_nothing_end(env: WorkflowEnvironment) -> None:
    expire = mocked(CommandActivities.expire, lambda _: ExpiryOutcome())
    assert await _run(env, await _timers(env, 3), expire) == ExpiryOutcome()
    assert len(expire.calls) == 1


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


def test_timers_are_grouped_by_deadlines_less_than_a_second_apart_from_the_earliest() -> None:
    t0 = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    at = [t0 + timedelta(milliseconds=ms) for ms in (999, 0, 600, 1000, 1500, 2100)]
    timers = [ExpiryTimer(organization_id="o", payment_id=f"p{i}", expires_at=d, version=1) for i, d in enumerate(at)]
    groups = expiry.timer_groups(timers)
    assert {wake - t0: [t.payment_id for t in group] for wake, group in groups.items()} == {
        timedelta(milliseconds=999): ["p1", "p2", "p0"], timedelta(milliseconds=1500): ["p3", "p4"],
        timedelta(milliseconds=2100): ["p5"]}
    assert expiry.timer_groups(list(reversed(timers))) == groups  # deterministic
    assert (expiry.expiry_workflow_id("payments-batch/b1", t0)
            == "payments-expiry/20260301T120000.500000Z/payments-batch/b1")
