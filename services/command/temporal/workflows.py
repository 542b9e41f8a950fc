"""Command workflows on ``payments-commands``: the seed's validate -> execute -> publish, the
rules in the workflow, the write and its outbox row in one local activity's transaction;
a business rejection fails the workflow, never retried (temporal/failures.py). They live
in histories: keep them deterministic, as tests/workflows/test_workflow_replay.py checks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from services.command import domain
    from services.command.commands import (
        BulkCreatePayments,
        BulkCreateResult,
        CommandBatch,
        CommandBatchResult,
        CommandResult,
        CreatePayment,
        ExpiryOutcome,
        ExpiryTimers,
        ModifyPayment,
        Rejected,
        expiry_timers,
    )
    from services.command.temporal.activities import CommandActivities
    from services.command.temporal.expiry import WORKFLOW_TYPE
    from services.command.temporal.failures import NON_RETRYABLE, application_error, rejection_of

EXECUTE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                                maximum_interval=timedelta(seconds=5), maximum_attempts=10,
                                non_retryable_error_types=NON_RETRYABLE),
}


# A deadline must not be lost: its scheduling and its expiry retry until they succeed.
TIMER_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                                maximum_interval=timedelta(seconds=10), maximum_attempts=0),
}


def _validate(check: Any, *args: Any) -> None:
    """The validate step: pure rules, run in the workflow itself."""
    try:
        check(*args)
    except Rejected as rejection:
        raise application_error(rejection) from None


async def _execute(activity: Any, cmd: Any) -> Any:
    """The execute + publish step; a rejection becomes this workflow's failure. Then the
    timers of the deadlines it committed: from the workflow, so that a process dying
    between the commit and the scheduling only moves the scheduling to another worker."""
    try:
        result = await workflow.execute_local_activity_method(activity, cmd, **EXECUTE_OPTIONS)
    except ActivityError as err:
        rejection = rejection_of(err)
        if rejection is None:
            raise
        raise application_error(rejection) from None
    if timers := expiry_timers(cmd, result):
        await workflow.execute_local_activity_method(
            CommandActivities.schedule_expiry, ExpiryTimers(timers=timers), **TIMER_OPTIONS)
    return result


# Unsandboxed: they call only pure rules and local activities, and the sandbox re-imports
# modules on every run (and on Python 3.11 fails a worker's start now and then,
# temporalio/sdk-python#585; docs/design.md section 11).
@workflow.defn(name="CreatePayment", sandboxed=False)
class CreatePaymentWorkflow:
    activity = staticmethod(CommandActivities.execute_create)

    @workflow.run
    async def run(self, cmd: CreatePayment) -> CommandResult:
        _validate(domain.validate_create, cmd, workflow.now())
        return await _execute(self.activity, cmd)


@workflow.defn(name="ModifyPayment", sandboxed=False)
class ModifyPaymentWorkflow:
    """update, complete, fail, cancel, refund and delete (``cmd.action``)."""

    activity = staticmethod(CommandActivities.execute_modify)

    @workflow.run
    async def run(self, cmd: ModifyPayment) -> CommandResult:
        _validate(domain.validate_update_fields, cmd)
        return await _execute(self.activity, cmd)


@workflow.defn(name="BulkCreatePayments", sandboxed=False)
class BulkCreatePaymentsWorkflow:
    activity = staticmethod(CommandActivities.execute_bulk_create)

    @workflow.run
    async def run(self, cmd: BulkCreatePayments) -> BulkCreateResult:
        return await _execute(self.activity, cmd)


@workflow.defn(name="CommandBatch", sandboxed=False)
class CommandBatchWorkflow:
    """Group commit: the items' rules run in the activity, per item (a refused item must
    not refuse the batch). Its memo lists the commands, for the Temporal UI."""

    activity = staticmethod(CommandActivities.execute_batch)

    @workflow.run
    async def run(self, batch: CommandBatch) -> CommandBatchResult:
        return await _execute(self.activity, batch)


@workflow.defn(name=WORKFLOW_TYPE, sandboxed=False)
class PaymentExpiryWorkflow:
    """Timers of deadlines less than a second apart (temporal/expiry.py): started with a
    delay until the last, it expires each payment whose deadline this still is; one that
    fired early on the database's clock is waited for again."""

    activity = staticmethod(CommandActivities.expire)

    @workflow.run
    async def run(self, timers: ExpiryTimers) -> ExpiryOutcome:
        pending, expired = timers.timers, []
        while True:
            wait = (max(t.expires_at for t in pending) - workflow.now()).total_seconds()
            if wait > 0:
                await workflow.sleep(wait)
            outcome = await workflow.execute_local_activity_method(
                self.activity, ExpiryTimers(timers=pending), **TIMER_OPTIONS)
            expired += outcome.expired
            if not outcome.early:
                return ExpiryOutcome(expired=expired)
            pending = outcome.early
            await workflow.sleep(1)  # the database's clock is behind the workers'
