"""The query workflows' activities (local activities): each runs one of the query handlers
the HTTP API runs, its failures typed for the caller (temporal/failures.py)."""

from __future__ import annotations

from temporalio import activity

from services.query.handlers import PaymentNotFound, QueryHandlers
from services.query.queries import (
    GetInput,
    HistoryInput,
    PaymentHistory,
    SearchInput,
    SearchResult,
    Statistics,
    StatisticsInput,
)
from services.query.temporal.failures import as_application_errors
from shared.payment_view import Payment


class QueryActivities:
    def __init__(self, handlers: QueryHandlers) -> None:
        self.handlers = handlers

    @activity.defn(name="search_payments")
    async def search(self, data: SearchInput) -> SearchResult:
        with as_application_errors():
            return await self.handlers.search(data.organization_id, data.query, data.consistent_with)

    @activity.defn(name="get_payment")
    async def get(self, data: GetInput) -> Payment | None:
        with as_application_errors():
            return await self.handlers.get_or_none(data.organization_id, data.payment_id, data.consistent_with)

    @activity.defn(name="payment_statistics")
    async def statistics(self, data: StatisticsInput) -> Statistics:
        with as_application_errors():
            return await self.handlers.statistics(data.organization_id, data.query, data.consistent_with)

    @activity.defn(name="payment_history")
    async def history(self, data: HistoryInput) -> PaymentHistory | None:
        """A page of the payment's history; None if the organization has no such payment."""
        with as_application_errors():
            try:
                return await self.handlers.history(data.organization_id, data.query, data.consistent_with)
            except PaymentNotFound:
                return None
