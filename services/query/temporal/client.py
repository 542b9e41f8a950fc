"""Client facade of the query side over Temporal, mirroring the seed's
``PaymentCqsService`` read methods (``searchPayments``, statistics, get by id).

For orchestrated callers; interactive clients should use the HTTP API (faster: see
docs/benchmarks.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from services.query.handlers import NotCaughtUp
from services.query.queries import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
from services.query.temporal.workflows import PaymentQueryRequest, PaymentQueryResult, PaymentQueryWorkflow
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken
from shared.settings import Settings
from shared.temporal import connect

QUERY_TIMEOUT = timedelta(seconds=120)  # the seed's query workflow execution timeout


def consistency_error(error: WorkflowFailureError) -> Exception | None:
    """The exception a consistency-token outcome raised in the activity (see activities.py)."""
    cause: BaseException | None = error.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    if cause is None:
        return None
    if cause.type == "NotCaughtUp" and cause.details:
        details = cause.details[0]
        return NotCaughtUp(details["behind"], details["waited"])
    if cause.type in (InvalidConsistencyToken.__name__, ForeignConsistencyToken.__name__):
        kind = InvalidConsistencyToken if cause.type == InvalidConsistencyToken.__name__ else ForeignConsistencyToken
        return kind(cause.message)
    return None


class PaymentQueryClient:
    def __init__(self, client: Client, task_queue: str = "payments-queries") -> None:
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(cls, settings: Settings) -> PaymentQueryClient:
        return cls(await connect(settings, with_metrics=False), settings.query_task_queue)

    async def _run(self, request: PaymentQueryRequest) -> PaymentQueryResult:
        try:
            return await self.client.execute_workflow(
                PaymentQueryWorkflow.run, request,
                id=f"payment-query-{request.kind}-{uuid.uuid4()}",
                task_queue=self.task_queue,
                execution_timeout=QUERY_TIMEOUT,
                task_timeout=timedelta(seconds=30),
            )
        except WorkflowFailureError as err:
            raised = consistency_error(err)
            if raised is None:
                raise
            raise raised from None

    # ``consistent_with``: consistency tokens of command results; the answer reflects
    # their writes, else NotCaughtUp (bounded wait), InvalidConsistencyToken or
    # ForeignConsistencyToken.

    async def search_payments(self, organization_id: str, query: SearchQuery,
                              consistent_with: Sequence[str] = ()) -> SearchResult:
        result = await self._run(PaymentQueryRequest(kind="search", organization_id=organization_id, search=query,
                                                     consistent_with=list(consistent_with)))
        assert result.search is not None
        return result.search

    async def get_payment(self, organization_id: str, payment_id: str,
                          consistent_with: Sequence[str] = ()) -> PaymentView | None:
        request = PaymentQueryRequest(kind="get", organization_id=organization_id, payment_id=payment_id,
                                      consistent_with=list(consistent_with))
        return (await self._run(request)).payment

    async def payment_statistics(self, organization_id: str, query: StatisticsQuery,
                                 consistent_with: Sequence[str] = ()) -> Statistics:
        request = PaymentQueryRequest(kind="statistics", organization_id=organization_id, statistics=query,
                                      consistent_with=list(consistent_with))
        result = await self._run(request)
        assert result.statistics is not None
        return result.statistics
