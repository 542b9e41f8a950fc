"""``PaymentCqsService``: the seed's facade for other Python services, over Temporal only
(``PaymentCommandClient`` and ``PaymentQueryClient``), so a caller needs no database,
broker or cache. Reads take ``consistent_with=`` command results and answer once the
read model reflects them, else ``NotCaughtUp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    Command,
    CommandResult,
    CreatePayment,
    ModifyPayment,
    with_actor,
)
from services.command.temporal.client import PaymentCommandClient, workflow_id
from services.query.queries import HistoryQuery, PaymentHistory, SearchQuery, SearchResult, Statistics, StatisticsQuery
from services.query.temporal.client import PaymentQueryClient
from shared.consistency import ConsistencyTokens
from shared.expiry import ExpiryPolicy
from shared.payment_view import Payment
from shared.settings import Settings
from shared.temporal import connect

Written = str | CommandResult | BulkCreateResult
ConsistentWith = Written | Sequence[Written] | None


def tokens_of(consistent_with: ConsistentWith) -> list[str]:
    """The consistency tokens of command results (or tokens) to pass to a read."""
    if consistent_with is None:
        return []
    items = [consistent_with] if isinstance(consistent_with, str | CommandResult | BulkCreateResult) else consistent_with
    tokens = []
    for item in items:
        token = item if isinstance(item, str) else item.consistency_token
        if isinstance(item, BulkCreateResult) and token is None and not item.written():
            continue  # a batch that wrote nothing has nothing to wait for
        if token is None:
            raise ValueError("this command result carries no consistency token (PaymentCommandClient(tokens=...))")
        tokens.append(token)
    return tokens


def with_deadlines(command: Command, policy: ExpiryPolicy, now: datetime) -> Command:
    """``command`` with the deadlines ExpiryPolicy gives it, as the HTTP and Kafka doors
    do (a create's default, a deadline checked); ValueError naming the field if refused."""
    try:
        if isinstance(command, CreatePayment):
            return command.model_copy(update={"expires_at": policy.for_create(command.expires_at, now)})
        if isinstance(command, ModifyPayment) and command.expires_at is not None:
            return command.model_copy(update={"expires_at": policy.check(command.expires_at, now)})
    except ValueError as exc:
        raise ValueError(f"expires_at: {exc}") from None
    if isinstance(command, BulkCreatePayments):
        items = []
        for i, item in enumerate(command.items):
            try:
                items.append(with_deadlines(item, policy, now))
            except ValueError as exc:
                raise ValueError(f"items.{i}.{exc}") from None
        return command.model_copy(update={"items": items})
    return command


class PaymentCqsService:
    """``actor``: who the events of commands that name no ``actor`` are recorded as (the
    calling service, e.g. ``billing-service``). ``expiry``: the deadline rule of every
    door (``Settings.expiry_policy()``); by default the settings' defaults."""

    def __init__(self, commands: PaymentCommandClient, queries: PaymentQueryClient, *, actor: str = "facade",
                 expiry: ExpiryPolicy | None = None) -> None:
        self.commands = commands
        self.queries = queries
        self.actor = actor
        self.expiry = expiry or Settings.model_construct().expiry_policy()

    @classmethod
    async def connect(cls, settings: Settings, *, command_timeout: timedelta = timedelta(minutes=5),
                      actor: str = "facade") -> PaymentCqsService:
        client = await connect(settings, with_metrics=False)
        return cls(
            PaymentCommandClient(client, task_queue=settings.command_task_queue, workflow_timeout=command_timeout,
                                  tokens=ConsistencyTokens(settings.consistency_token_secret)),
            PaymentQueryClient(client, settings.query_task_queue), actor=actor, expiry=settings.expiry_policy(),
        )

    async def process_command(self, command: Command) -> CommandResult | BulkCreateResult:
        """Run a command and wait: its result (with its ``consistency_token``: pass the
        result as ``consistent_with`` to read it back), or ``Rejected`` for a business rule."""
        return await self.commands.process(self._prepared(command))

    async def process_command_async(self, command: Command) -> str:
        """Start a command; returns its (deterministic) workflow id."""
        return await self.commands.process_async(self._prepared(command))

    def _prepared(self, command: Command) -> Command:
        return with_deadlines(with_actor(command, self.actor), self.expiry, datetime.now(UTC))

    @staticmethod
    def workflow_id(command: Command) -> str:
        return workflow_id(command.organization_id, command.command_id)

    async def search_payments(self, organization_id: str, query: SearchQuery, *,
                              consistent_with: ConsistentWith = None) -> SearchResult:
        """A page of payments; with ``consistent_with`` it reflects those command results."""
        return await self.queries.search_payments(organization_id, query, tokens_of(consistent_with))

    async def get_payment(self, organization_id: str, payment_id: str, *,
                          consistent_with: ConsistentWith = None) -> Payment | None:
        """The payment or None; with ``consistent_with`` it reflects those command results."""
        return await self.queries.get_payment(organization_id, payment_id, tokens_of(consistent_with))

    async def payment_statistics(self, organization_id: str, query: StatisticsQuery, *,
                                 consistent_with: ConsistentWith = None) -> Statistics:
        """Statistics; with ``consistent_with`` they include those command results."""
        return await self.queries.payment_statistics(organization_id, query, tokens_of(consistent_with))

    async def payment_history(self, organization_id: str, payment_id: str, *, starting_after: int | None = None,
                              limit: int | None = None, consistent_with: ConsistentWith = None) -> PaymentHistory | None:
        """A page of the payment's versions, oldest first (who, what, when, the changes), or
        None if the organization has no such payment; a deleted payment keeps its history.
        The next page: ``starting_after=int(page.next_cursor)``."""
        query = HistoryQuery(payment_id=payment_id, starting_after=starting_after,
                             **({"limit": limit} if limit is not None else {}))
        return await self.queries.payment_history(organization_id, query, tokens_of(consistent_with))
