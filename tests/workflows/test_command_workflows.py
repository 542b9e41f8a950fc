"""The command workflows on Temporal's time-skipping test server with mocked activities
(the Temporal samples' style), and the command client's routes through them. Against the
real worker and PostgreSQL: tests/integration/command/."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from services.command.commands import BulkCreateResult, CommandResult, CommandState, Rejected, RejectionKind
from services.command.temporal import registry
from services.command.temporal.activities import CommandActivities
from services.command.temporal.client import PaymentCommandClient
from services.command.temporal.failures import rejection_of
from shared.consistency import ConsistencyTokens
from tests.support.temporal_env import mocked, time_skipping, worker
from tests.support.workflow_scenarios import (
    BATCH,
    BULK,
    COMPLETE,
    CREATE,
    EMPTY_UPDATE,
    INVALID_CREATE,
    PAID,
    REFUND,
    Scenario,
    scenarios,
)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as environment:
        yield environment


def scenario(name: str) -> Scenario:
    return next(s for s in scenarios() if s.name == name)


async def run(env: WorkflowEnvironment, s: Scenario) -> Any:
    async with worker(env, registry.WORKFLOWS, s.activities) as queue:
        return await env.client.execute_workflow(s.workflow.run, s.input, id=f"wf-{uuid.uuid4()}", task_queue=queue)


async def refusal(env: WorkflowEnvironment, s: Scenario) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await run(env, s)
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause


async def test_a_create_runs_its_activity_once_and_returns_its_result(env: WorkflowEnvironment) -> None:
    s = scenario("CreatePayment.created")
    result = await run(env, s)
    assert result == CommandResult(command_id=CREATE.command_id, payment=PAID)
    assert s.activities[0].calls == [CREATE]


async def test_an_invalid_create_is_refused_in_the_workflow_before_any_activity(env: WorkflowEnvironment) -> None:
    execute = mocked(CommandActivities.execute_create, lambda cmd: pytest.fail("validate must refuse it first"))
    error = await refusal(env, Scenario("invalid", registry.BY_COMMAND[type(INVALID_CREATE)].workflow, INVALID_CREATE,
                                        [execute]))
    assert (error.type, error.non_retryable) == (RejectionKind.VALIDATION.value, True)
    assert "currency" in error.message and execute.calls == []


async def test_a_rejection_in_the_activity_is_the_workflows_never_retried(env: WorkflowEnvironment) -> None:
    s = scenario("ModifyPayment.stale")
    error = await refusal(env, s)
    rejection = rejection_of(error)
    assert rejection is not None and rejection.kind is RejectionKind.VERSION_MISMATCH
    assert rejection.current_version == 4
    assert len(s.activities[0].calls) == 1


async def test_an_update_without_fields_is_refused_in_the_workflow(env: WorkflowEnvironment) -> None:
    error = await refusal(env, Scenario("empty", registry.BY_COMMAND[type(EMPTY_UPDATE)].workflow, EMPTY_UPDATE))
    assert error.type == RejectionKind.VALIDATION.value and "at least one" in error.message


async def test_an_infrastructure_failure_is_retried_until_the_activity_succeeds(env: WorkflowEnvironment) -> None:
    outcomes: list[Any] = [RuntimeError("database away"), RuntimeError("database away"),
                           CommandResult(command_id=COMPLETE.command_id, payment=PAID)]

    def answer(_: Any) -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    execute = mocked(CommandActivities.execute_modify, answer)
    result = await run(env, Scenario("retried", registry.BY_COMMAND[type(COMPLETE)].workflow, COMPLETE, [execute]))
    assert result.command_id == COMPLETE.command_id and len(execute.calls) == 3


async def test_bulk_creates_and_group_commits_return_their_activitys_items(env: WorkflowEnvironment) -> None:
    bulk = await run(env, scenario("BulkCreatePayments.created"))
    assert [(i.payment is not None, i.rejection is not None) for i in bulk.items] == [(True, False), (False, True)]
    batch = await run(env, scenario("CommandBatch.committed"))
    assert [item.command_id for item in batch.items] == [c.command_id for c in BATCH.items]


async def test_the_client_routes_each_command_and_decodes_each_result(env: WorkflowEnvironment) -> None:
    tokens = ConsistencyTokens("a-test-secret-of-enough-length")
    activities = [s.activities[0] for s in scenarios() if s.name in {
        "CreatePayment.created", "BulkCreatePayments.created"}]
    async with worker(env, registry.WORKFLOWS, activities) as queue:
        client = PaymentCommandClient(env.client, task_queue=queue, tokens=tokens)
        created = await client.process(CREATE)
        assert created.payment == PAID and tokens.decode(created.consistency_token).versions == (("pay-1", 1),)
        with pytest.raises(Rejected) as refused:
            await client.process(INVALID_CREATE.model_copy(update={"command_id": "create-invalid"}))
        assert refused.value.kind is RejectionKind.VALIDATION
        await client.process(BULK)
        state, stored = await client.status(BULK.organization_id, BULK.command_id)
        assert state is CommandState.COMPLETED and isinstance(stored, BulkCreateResult)
        state, failed = await client.status(CREATE.organization_id, "create-invalid")
        assert state is CommandState.FAILED and isinstance(failed, Rejected)
        assert await client.status(CREATE.organization_id, "never-sent") is None


async def test_a_refund_beyond_what_is_left_reaches_the_client_with_the_remaining_amount(
        env: WorkflowEnvironment) -> None:
    s = scenario("ModifyPayment.refund-exceeds-remaining")
    async with worker(env, registry.WORKFLOWS, s.activities) as queue:
        client = PaymentCommandClient(env.client, task_queue=queue,
                                      tokens=ConsistencyTokens("a-test-secret-of-enough-length"))
        with pytest.raises(Rejected) as refused:
            await client.process(REFUND.model_copy(update={"command_id": f"refund-{uuid.uuid4()}"}))
    assert (refused.value.kind, refused.value.remaining, refused.value.current_version) == (
        RejectionKind.REFUND_EXCEEDS_REMAINING, 200, 3)


async def test_a_refund_of_no_money_is_refused_in_the_workflow(env: WorkflowEnvironment) -> None:
    execute = mocked(CommandActivities.execute_modify, lambda cmd: pytest.fail("validate must refuse it first"))
    bad = REFUND.model_copy(update={"amount": 0})
    error = await refusal(env, Scenario("no money", registry.BY_COMMAND[type(bad)].workflow, bad, [execute]))
    assert error.type == RejectionKind.VALIDATION.value and "amount" in error.message and execute.calls == []
