"""The command workflows' activities (local activities): each runs its handler, whose one
transaction writes the payment change and its outbox row. A rejection leaves as a
business failure (temporal/failures.py); anything else is retried by the workflow's
policy. With a worker in this process, the outcome is also handed to the waiting request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio import activity

from services.command import handlers
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
)
from services.command.ports import CommandStore
from services.command.temporal import expiry
from services.command.temporal.failures import application_error
from shared.telemetry import bind_log_context, log_context

log = logging.getLogger("payments.command.activities")
T = TypeVar("T")


def _as_activity(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Log context + rejection mapping around one activity method."""

    @functools.wraps(fn)
    async def wrapper(self: CommandActivities, cmd: Any) -> T:
        info = activity.info()
        token = bind_log_context(command_id=cmd.command_id, workflow_id=info.workflow_id,
                                 organization_id=cmd.organization_id)
        try:
            result = await fn(self, cmd)
        except Rejected as rejection:
            log.info("command rejected: %s", rejection.detail, extra={"fields": {"reason": rejection.kind.value}})
            self.hand_over(info.workflow_id, rejection)
            raise application_error(rejection) from None
        else:
            self.hand_over(info.workflow_id, result)
            return result
        finally:
            log_context.reset(token)

    return wrapper


class CommandActivities:
    def __init__(self, store: CommandStore, *, source: str,
                 hand_over: Callable[[str, Any], None] | None = None) -> None:
        self.store = store
        self.source = source
        # LocalResults.deliver of this process's PaymentCommandClient, if it has one: the
        # request waiting for this workflow gets the committed outcome at once.
        self.hand_over = hand_over or (lambda workflow_id, outcome: None)

    @activity.defn(name="payments.execute_create")
    @_as_activity
    async def execute_create(self, cmd: CreatePayment) -> CommandResult:
        return await handlers.create(self.store, cmd, source=self.source)

    @activity.defn(name="payments.execute_modify")
    @_as_activity
    async def execute_modify(self, cmd: ModifyPayment) -> CommandResult:
        return await handlers.modify(self.store, cmd, source=self.source)

    @activity.defn(name="payments.execute_bulk_create")
    @_as_activity
    async def execute_bulk_create(self, cmd: BulkCreatePayments) -> BulkCreateResult:
        return await handlers.bulk_create(self.store, cmd, source=self.source)

    @activity.defn(name="payments.schedule_expiry")
    async def schedule_expiry(self, timers: ExpiryTimers) -> None:
        """The committed deadlines' timers (temporal/expiry.py), on this task queue, named
        after the workflow that committed them."""
        info = activity.info()
        await expiry.schedule_all(activity.client(), info.task_queue, info.workflow_id, timers.timers,
                                  datetime.now(UTC))

    @activity.defn(name="payments.expire")
    async def expire(self, timers: ExpiryTimers) -> ExpiryOutcome:
        """Timers fired: expire each payment whose deadline this still is (handlers.expire)."""
        token = bind_log_context(workflow_id=activity.info().workflow_id)
        try:
            outcome = await handlers.expire(self.store, timers.timers, source=self.source)
            if outcome.expired:
                log.info("%d payment(s) expired", len(outcome.expired))
            return outcome
        finally:
            log_context.reset(token)

    @activity.defn(name="payments.execute_batch")
    async def execute_batch(self, batch: CommandBatch) -> CommandBatchResult:
        """Group commit: one transaction for the whole batch; per-item refusals are
        outcomes, not errors (the activity fails, and is retried, only as a whole)."""
        info = activity.info()
        token = bind_log_context(workflow_id=info.workflow_id, batch_id=batch.batch_id)
        try:
            result = await handlers.run_batch(self.store, batch, source=self.source)
            self.hand_over(info.workflow_id, result)
            return result
        finally:
            log_context.reset(token)
