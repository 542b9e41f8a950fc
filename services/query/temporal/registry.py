"""What handles what on the query side: each query kind, its typed input and the workflow
that answers it (each workflow names the one activity, hence the one handler, it runs).
The client's routes and the worker's registrations come from this table: adding a query
is one row here, beside its workflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.query.queries import GetInput, HistoryInput, SearchInput, StatisticsInput
from services.query.temporal.activities import QueryActivities
from services.query.temporal.workflows import (
    GetPaymentWorkflow,
    PaymentHistoryWorkflow,
    PaymentStatisticsWorkflow,
    SearchPaymentsWorkflow,
)


@dataclass(frozen=True)
class Route:
    kind: str  # in the workflow id: payment-query-<kind>-<uuid>
    request: type[BaseModel]
    workflow: type

    @property
    def activity(self) -> Callable[..., Any]:
        """The activity the workflow executes (a ``QueryActivities`` method)."""
        return self.workflow.activity  # type: ignore[attr-defined, no-any-return]


ROUTES: tuple[Route, ...] = (
    Route("search", SearchInput, SearchPaymentsWorkflow),
    Route("get", GetInput, GetPaymentWorkflow),
    Route("statistics", StatisticsInput, PaymentStatisticsWorkflow),
    Route("history", HistoryInput, PaymentHistoryWorkflow),
)
BY_REQUEST: dict[type, Route] = {r.request: r for r in ROUTES}
WORKFLOWS: list[type] = [r.workflow for r in ROUTES]


def activities(hosted: QueryActivities) -> list[Callable[..., Any]]:
    """The activities a worker registers: each route's, bound to ``hosted``."""
    return [getattr(hosted, r.activity.__name__) for r in ROUTES]
