"""Temporal activities of the query side: thin wrappers over the shared query handlers.

Consistency-token outcomes become non-retryable ``ApplicationError``s (a retry would only
wait the bound again) whose ``type`` names the problem; ``services.query.temporal.client`` turns
them back into the same exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.query.handlers import NotCaughtUp, QueryHandlers
from services.query.queries import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken


@contextmanager
def consistency_failures() -> Iterator[None]:
    try:
        yield
    except NotCaughtUp as exc:
        raise ApplicationError(str(exc), {"behind": exc.behind, "waited": exc.waited},
                               type="NotCaughtUp", non_retryable=True) from None
    except (InvalidConsistencyToken, ForeignConsistencyToken) as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


class ReadInput(BaseModel):
    organization_id: str
    consistent_with: list[str] = Field(default_factory=list, description="Consistency tokens to reflect")


class SearchInput(ReadInput):
    query: SearchQuery


class GetInput(ReadInput):
    payment_id: str


class StatisticsInput(ReadInput):
    query: StatisticsQuery


class QueryActivities:
    def __init__(self, handlers: QueryHandlers) -> None:
        self.handlers = handlers

    @activity.defn(name="search_payments")
    async def search(self, data: SearchInput) -> SearchResult:
        with consistency_failures():
            return await self.handlers.search(data.organization_id, data.query, data.consistent_with)

    @activity.defn(name="get_payment")
    async def get(self, data: GetInput) -> PaymentView | None:
        with consistency_failures():
            return await self.handlers.get_or_none(data.organization_id, data.payment_id, data.consistent_with)

    @activity.defn(name="payment_statistics")
    async def statistics(self, data: StatisticsInput) -> Statistics:
        with consistency_failures():
            return await self.handlers.statistics(data.organization_id, data.query, data.consistent_with)
