"""Command workflows on task queue ``payments-commands`` (DESIGN section 6).

Each mirrors the seed's validate -> execute -> publish:

- validate: the pure rules run inside the workflow (deterministic, no activity needed);
- execute + publish: one local activity writes the payment change and its outbox row in
  one transaction (the relay then publishes the row to Kafka).

The workflows run outside the SDK's sandbox (``sandboxed=False``): the sandbox re-imports
modules for every run, which measured ~16 ms of CPU per command (see
docs/benchmarks.md). They stay deterministic by construction: they only call
the pure rules with ``workflow.now()`` and one local activity; keep it that way.

Business rejections fail the workflow with a non-retryable ``ApplicationError`` whose
``type`` is the rejection kind; infrastructure failures are retried with a bounded policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from services.command import domain
    from services.command.commands import (
        BulkCreatePayments,
        BulkCreateResult,
        CommandBatch,
        CommandBatchResult,
        CommandResult,
        CreatePayment,
        ModifyPayment,
        Rejected,
        RejectionKind,
    )
    from services.command.temporal.activities import CommandActivities, business_error

EXECUTE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=[kind.value for kind in RejectionKind],
)
EXECUTE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": EXECUTE_RETRY,
}


def _reraise_business(err: ActivityError) -> NoReturn:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in {k.value for k in RejectionKind}:
        raise ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True) from None
    raise err


def _validate(check: Any, *args: Any) -> None:
    """The validate step: pure rules, run in the workflow itself."""
    try:
        check(*args)
    except Rejected as rejection:
        raise business_error(rejection) from None


async def _execute(method: Any, cmd: Any) -> Any:
    try:
        return await workflow.execute_local_activity_method(method, cmd, **EXECUTE_OPTIONS)
    except ActivityError as err:
        _reraise_business(err)


@workflow.defn(name="CreatePayment", sandboxed=False)
class CreatePaymentWorkflow:
    @workflow.run
    async def run(self, cmd: CreatePayment) -> CommandResult:
        _validate(domain.validate_create, cmd, workflow.now())
        return await _execute(CommandActivities.execute_create, cmd)


@workflow.defn(name="ModifyPayment", sandboxed=False)
class ModifyPaymentWorkflow:
    """update, complete, fail, cancel, refund and delete (``cmd.action``)."""

    @workflow.run
    async def run(self, cmd: ModifyPayment) -> CommandResult:
        _validate(domain.validate_update_fields, cmd)
        return await _execute(CommandActivities.execute_modify, cmd)


@workflow.defn(name="BulkCreatePayments", sandboxed=False)
class BulkCreatePaymentsWorkflow:
    @workflow.run
    async def run(self, cmd: BulkCreatePayments) -> BulkCreateResult:
        return await _execute(CommandActivities.execute_bulk_create, cmd)


@workflow.defn(name="CommandBatch", sandboxed=False)
class CommandBatchWorkflow:
    """Group commit: commands that arrived while another execution was in flight, in one
    local activity and one transaction. The items' rules run in the activity (the same
    pure rules, per item: a refused item must not refuse the batch). Its memo lists the
    commands (``<org>/<command id>``) so that the Temporal UI shows what it ran."""

    @workflow.run
    async def run(self, batch: CommandBatch) -> CommandBatchResult:
        return await _execute(CommandActivities.execute_batch, batch)


WORKFLOWS = [CreatePaymentWorkflow, ModifyPaymentWorkflow, BulkCreatePaymentsWorkflow, CommandBatchWorkflow]
