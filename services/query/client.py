"""Client facade of the query side over Temporal, mirroring the seed's
``PaymentCqsService`` read methods (``searchPayments``, statistics, get by id).

For orchestrated callers; interactive clients should use the HTTP API (faster: see
docs/benchmarks.md).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client

from services.query.models import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
from services.query.workflows import PaymentQueryRequest, PaymentQueryResult, PaymentQueryWorkflow
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

    async def _run(self, request: PaymentQueryRequest) -> PaymentQueryResult:
        return await self.client.execute_workflow(
            PaymentQueryWorkflow.run, request,
            id=f"payment-query-{request.kind}-{uuid.uuid4()}",
            task_queue=self.task_queue,
            execution_timeout=QUERY_TIMEOUT,
            task_timeout=timedelta(seconds=30),
        )

    async def search_payments(self, organization_id: str, query: SearchQuery) -> SearchResult:
        result = await self._run(PaymentQueryRequest(kind="search", organization_id=organization_id, search=query))
        assert result.search is not None
        return result.search

    async def get_payment(self, organization_id: str, payment_id: str) -> PaymentView | None:
        request = PaymentQueryRequest(kind="get", organization_id=organization_id, payment_id=payment_id)
        return (await self._run(request)).payment

    async def payment_statistics(self, organization_id: str, query: StatisticsQuery) -> Statistics:
        request = PaymentQueryRequest(kind="statistics", organization_id=organization_id, statistics=query)
        result = await self._run(request)
        assert result.statistics is not None
        return result.statistics
