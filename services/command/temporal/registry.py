"""What handles what on the command side: each typed command, the workflow that runs it,
and the result that workflow returns (each workflow names the one activity it executes).
The client's routes, the worker's registrations and the decoding of a finished command's
result all come from this table: adding a command is one row here, beside its workflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow

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
)
from services.command.temporal.activities import CommandActivities
from services.command.temporal.workflows import (
    BulkCreatePaymentsWorkflow,
    CommandBatchWorkflow,
    CreatePaymentWorkflow,
    ModifyPaymentWorkflow,
    PaymentExpiryWorkflow,
)


@dataclass(frozen=True)
class Route:
    command: type[BaseModel]
    workflow: type
    result: type[BaseModel]

    @property
    def workflow_type(self) -> str:
        return workflow._Definition.must_from_class(self.workflow).name

    @property
    def activity(self) -> Callable[..., Any]:
        """The activity the workflow executes (a ``CommandActivities`` method)."""
        return self.workflow.activity  # type: ignore[attr-defined, no-any-return]

    @property
    def activity_type(self) -> str:
        return activity._Definition.must_from_callable(self.activity).name


ROUTES: tuple[Route, ...] = (
    Route(CreatePayment, CreatePaymentWorkflow, CommandResult),
    Route(ModifyPayment, ModifyPaymentWorkflow, CommandResult),  # update, transitions, delete
    Route(BulkCreatePayments, BulkCreatePaymentsWorkflow, BulkCreateResult),
    Route(CommandBatch, CommandBatchWorkflow, CommandBatchResult),  # group commit
    Route(ExpiryTimers, PaymentExpiryWorkflow, ExpiryOutcome),  # deadlines (temporal/expiry.py)
)
BY_COMMAND: dict[type, Route] = {r.command: r for r in ROUTES}
BY_WORKFLOW_TYPE: dict[str, Route] = {r.workflow_type: r for r in ROUTES}
WORKFLOWS: list[type] = [r.workflow for r in ROUTES]


def activities(hosted: CommandActivities) -> list[Callable[..., Any]]:
    """The activities a worker registers: each route's, bound to ``hosted``."""
    return [getattr(hosted, r.activity.__name__) for r in ROUTES] + [hosted.schedule_expiry]
