"""``PaymentQueryClient``: the query workflows, the read half of the seed's
``PaymentCqsService`` (services/facade.py): search, get by id, statistics, history. For
orchestrated callers; interactive clients are better served by the HTTP API.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError

from services.query.queries import (
    GetInput,
    HistoryInput,
    HistoryQuery,
    PaymentHistory,
    ReadInput,
    SearchInput,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsInput,
    StatisticsQuery,
)
from services.query.temporal import registry
from services.query.temporal.failures import raised_by_activity
from shared.payment_view import Payment
from shared.settings import Settings
from shared.temporal import connect

QUERY_TIMEOUT = timedelta(seconds=120)  # the seed's query workflow execution timeout


class PaymentQueryClient:
    def __init__(self, client: Client, task_queue: str = "payments-queries") -> None:
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(cls, settings: Settings) -> PaymentQueryClient:
        return cls(await connect(settings, with_metrics=False), settings.query_task_queue)

    async def _run(self, request: ReadInput) -> Any:
        route = registry.BY_REQUEST[type(request)]
        try:
            return await self.client.execute_workflow(
                route.workflow.run, request, id=f"payment-query-{route.kind}-{uuid.uuid4()}",
                task_queue=self.task_queue, execution_timeout=QUERY_TIMEOUT, task_timeout=timedelta(seconds=30),
            )
        except WorkflowFailureError as err:
            raised = raised_by_activity(err)
            if raised is None:
                raise
            raise raised from None

    # ``consistent_with``: consistency tokens of command results; the answer reflects
    # their writes, else NotCaughtUp (bounded wait), InvalidConsistencyToken or
    # ForeignConsistencyToken.

    async def search_payments(self, organization_id: str, query: SearchQuery,
                              consistent_with: Sequence[str] = ()) -> SearchResult:
        return await self._run(SearchInput(organization_id=organization_id, query=query,
                                           consistent_with=list(consistent_with)))

    async def get_payment(self, organization_id: str, payment_id: str,
                          consistent_with: Sequence[str] = ()) -> Payment | None:
        return await self._run(GetInput(organization_id=organization_id, payment_id=payment_id,
                                        consistent_with=list(consistent_with)))

    async def payment_statistics(self, organization_id: str, query: StatisticsQuery,
                                 consistent_with: Sequence[str] = ()) -> Statistics:
        return await self._run(StatisticsInput(organization_id=organization_id, query=query,
                                               consistent_with=list(consistent_with)))

    async def payment_history(self, organization_id: str, query: HistoryQuery,
                              consistent_with: Sequence[str] = ()) -> PaymentHistory | None:
        return await self._run(HistoryInput(organization_id=organization_id, query=query,
                                            consistent_with=list(consistent_with)))
