"""``PaymentQueryWorkflow``: search, get by id and statistics as a Temporal workflow.

For orchestrated callers, long reports and the seed's API. One small deterministic
workflow: it dispatches on the request kind to one *local* activity (reads are short and
idempotent, so a local activity saves the task-queue round trip of a regular one) that
runs the same handlers as the HTTP API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field, model_validator

    from services.query.queries import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
    from services.query.temporal.activities import GetInput, QueryActivities, SearchInput, StatisticsInput

WORKFLOW_NAME = "PaymentQueryWorkflow"
READ_TIMEOUT = timedelta(seconds=10)
READ_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)


class PaymentQueryRequest(BaseModel):
    kind: Literal["search", "get", "statistics"]
    organization_id: str
    search: SearchQuery | None = None
    payment_id: str | None = None
    statistics: StatisticsQuery | None = None
    # Consistency tokens of command results: answer once the read model reflects them.
    consistent_with: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> PaymentQueryRequest:
        needed = {"search": self.search, "get": self.payment_id, "statistics": self.statistics}[self.kind]
        if needed is None:
            raise ValueError(f"a {self.kind} request needs its {self.kind} field")
        return self


class PaymentQueryResult(BaseModel):
    kind: Literal["search", "get", "statistics"]
    search: SearchResult | None = None
    payment: PaymentView | None = None
    statistics: Statistics | None = None


# Unsandboxed, like the command workflows: it only routes to local activities, so it is
# deterministic by construction, and on Python 3.10/3.11 the sandbox's importer can fail a
# worker's start intermittently ("Failed validating workflow", KeyError in the module
# lock: temporalio/sdk-python#585, fix pending in #1833).
@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class PaymentQueryWorkflow:
    @workflow.run
    async def run(self, request: PaymentQueryRequest) -> PaymentQueryResult:
        options = {"start_to_close_timeout": READ_TIMEOUT, "retry_policy": READ_RETRY}
        org, tokens = request.organization_id, request.consistent_with
        if request.kind == "search":
            assert request.search is not None
            found = await workflow.execute_local_activity_method(
                QueryActivities.search, SearchInput(organization_id=org, query=request.search,
                                                    consistent_with=tokens), **options)
            return PaymentQueryResult(kind="search", search=found)
        if request.kind == "get":
            assert request.payment_id is not None
            payment = await workflow.execute_local_activity_method(
                QueryActivities.get, GetInput(organization_id=org, payment_id=request.payment_id,
                                              consistent_with=tokens), **options)
            return PaymentQueryResult(kind="get", payment=payment)
        assert request.statistics is not None
        stats = await workflow.execute_local_activity_method(
            QueryActivities.statistics, StatisticsInput(organization_id=org, query=request.statistics,
                                                        consistent_with=tokens), **options)
        return PaymentQueryResult(kind="statistics", statistics=stats)
