"""Query workflows on task queue ``payments-queries``: one per query, each with one typed
input, each one local activity (a read is short and idempotent: no task-queue round trip)
over the handlers the HTTP API runs. For orchestrated callers, long reports and the
seed's API. Deterministic by construction; checked against recorded histories
(tests/unit/test_workflow_replay.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from services.query.queries import (
        GetInput,
        HistoryInput,
        PaymentHistory,
        SearchInput,
        SearchResult,
        Statistics,
        StatisticsInput,
    )
    from services.query.temporal.activities import QueryActivities
    from shared.payment_view import Payment

READ_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
}


# Unsandboxed, as the command workflows (temporal/workflows.py of the command side).
@workflow.defn(name="SearchPayments", sandboxed=False)
class SearchPaymentsWorkflow:
    activity = staticmethod(QueryActivities.search)

    @workflow.run
    async def run(self, request: SearchInput) -> SearchResult:
        return await workflow.execute_local_activity_method(self.activity, request, **READ_OPTIONS)


@workflow.defn(name="GetPayment", sandboxed=False)
class GetPaymentWorkflow:
    activity = staticmethod(QueryActivities.get)

    @workflow.run
    async def run(self, request: GetInput) -> Payment | None:
        return await workflow.execute_local_activity_method(self.activity, request, **READ_OPTIONS)


@workflow.defn(name="PaymentStatistics", sandboxed=False)
class PaymentStatisticsWorkflow:
    activity = staticmethod(QueryActivities.statistics)

    @workflow.run
    async def run(self, request: StatisticsInput) -> Statistics:
        return await workflow.execute_local_activity_method(self.activity, request, **READ_OPTIONS)


@workflow.defn(name="PaymentHistory", sandboxed=False)
class PaymentHistoryWorkflow:
    activity = staticmethod(QueryActivities.history)

    @workflow.run
    async def run(self, request: HistoryInput) -> PaymentHistory | None:
        return await workflow.execute_local_activity_method(self.activity, request, **READ_OPTIONS)
