"""``PaymentCqsService``: the seed's facade for other Python services, over Temporal.

It joins the two sides without either importing the other: commands go through the
command workflows (``services.command.client.PaymentCommandService``), reads through the
query workflows (``services.query.client.PaymentQueryClient``). A caller needs only a
Temporal connection; no database, broker or cache. Interactive clients are better served
by the HTTP APIs (lower latency, see docs/benchmarks.md).

    cqs = await PaymentCqsService.connect(Settings())
    result = await cqs.process_command(CreatePayment(...))
    workflow_id = await cqs.process_command_async(ModifyPayment(...))
    page = await cqs.search_payments("acme", SearchQuery(status="completed"))
    stats = await cqs.payment_statistics("acme", StatisticsQuery())
"""

from __future__ import annotations

from datetime import timedelta

from services.command.client import PaymentCommandService, workflow_id
from services.command.models import BatchResult, Command, CommandResult
from services.query.client import PaymentQueryClient
from services.query.models import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
from shared.settings import Settings
from shared.temporal import connect


class PaymentCqsService:
    def __init__(self, commands: PaymentCommandService, queries: PaymentQueryClient) -> None:
        self.commands = commands
        self.queries = queries

    @classmethod
    async def connect(cls, settings: Settings, *, command_timeout: timedelta = timedelta(minutes=5)) -> PaymentCqsService:
        client = await connect(settings, with_metrics=False)
        return cls(
            PaymentCommandService(client, task_queue=settings.command_task_queue, workflow_timeout=command_timeout),
            PaymentQueryClient(client, settings.query_task_queue),
        )

    async def process_command(self, command: Command) -> CommandResult | BatchResult:
        """Run a command and wait: its result, or ``Rejected`` for a business rule."""
        return await self.commands.process(command)

    async def process_command_async(self, command: Command) -> str:
        """Start a command; returns its (deterministic) workflow id."""
        return await self.commands.process_async(command)

    @staticmethod
    def workflow_id(command: Command) -> str:
        return workflow_id(command.organization_id, command.command_id)

    async def search_payments(self, organization_id: str, query: SearchQuery) -> SearchResult:
        return await self.queries.search_payments(organization_id, query)

    async def get_payment(self, organization_id: str, payment_id: str) -> PaymentView | None:
        return await self.queries.get_payment(organization_id, payment_id)

    async def payment_statistics(self, organization_id: str, query: StatisticsQuery) -> Statistics:
        return await self.queries.payment_statistics(organization_id, query)
