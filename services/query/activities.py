"""Temporal activities of the query side: thin wrappers over the shared query handlers."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from services.query.handlers import QueryHandlers
from services.query.models import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery


class SearchInput(BaseModel):
    organization_id: str
    query: SearchQuery


class GetInput(BaseModel):
    organization_id: str
    payment_id: str


class StatisticsInput(BaseModel):
    organization_id: str
    query: StatisticsQuery


class QueryActivities:
    def __init__(self, handlers: QueryHandlers) -> None:
        self.handlers = handlers

    @activity.defn(name="search_payments")
    async def search(self, data: SearchInput) -> SearchResult:
        return await self.handlers.search(data.organization_id, data.query)

    @activity.defn(name="get_payment")
    async def get(self, data: GetInput) -> PaymentView | None:
        return await self.handlers.get_or_none(data.organization_id, data.payment_id)

    @activity.defn(name="payment_statistics")
    async def statistics(self, data: StatisticsInput) -> Statistics:
        return await self.handlers.statistics(data.organization_id, data.query)
