"""The service layer: run one command against the store in one transaction (or a
group-committed batch of commands in one transaction, a savepoint each: :func:`run_batch`).

validate (rules) -> execute (payment row) -> publish (outbox row), all in the same
transaction; the command id is claimed first, so a retried activity returns the first
result instead of applying the command twice. Refusals are typed (:class:`Rejected`);
what they become on the wire is the edges' business.

The handlers own their port: :class:`UnitOfWork` and :class:`CommandStore` below say what
they need; services/command/adapters/store.py implements them on PostgreSQL and
tests/unit/fakes.py in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from services.command import domain
from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    BulkItemResult,
    CommandBatch,
    CommandBatchResult,
    CommandResult,
    CreatePayment,
    ModifyPayment,
    Rejected,
    Rejection,
    RejectionKind,
    command_type,
)
from shared.events import PaymentEvent
from shared.payment import PaymentSnapshot

log = logging.getLogger("payments.command")
Clock = Callable[[], datetime]
MAX_RACE_RETRIES = 5


class UnitOfWork(Protocol):
    """The statements of one command, inside one transaction (all or nothing)."""

    async def claim_command(self, org: str, command_id: str, command_type: str, payment_id: str | None) -> bool:
        """Reserve the command id; False if it already ran."""

    async def command_result(self, org: str, command_id: str) -> Any:
        """The stored result (JSON) of a command, or None."""

    async def save_result(self, org: str, command_id: str, result: Any) -> None: ...

    async def get_payment(self, org: str, payment_id: str) -> PaymentSnapshot | None: ...

    async def insert_payment(self, p: PaymentSnapshot) -> bool:
        """False if the id is taken in the payment's organization."""

    async def update_payment(self, p: PaymentSnapshot, expected_version: int) -> bool:
        """Optimistic concurrency: False if the stored version is no longer ``expected_version``."""

    async def add_event(self, event: PaymentEvent) -> None:
        """Append the event to the outbox (published once the transaction commits)."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: if the block raises, only its statements are undone."""


class CommandStore(Protocol):
    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block exits normally, rolled back otherwise."""


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _already_done(uow: UnitOfWork, cmd: CreatePayment | ModifyPayment) -> CommandResult | None:
    claimed = await uow.claim_command(cmd.organization_id, cmd.command_id, command_type(cmd), cmd.payment_id)
    if claimed:
        return None
    stored = await uow.command_result(cmd.organization_id, cmd.command_id)
    return CommandResult.model_validate(stored) if stored is not None else None


async def _finish(uow: UnitOfWork, cmd: CreatePayment | ModifyPayment, decision: domain.Decision,
                  source: str) -> CommandResult:
    event = decision.event(source)
    await uow.add_event(event)
    log.info("%s event staged in the command's transaction", event.type.short, extra={"fields": {
        "event_id": event.id, "payment_id": event.subject, "version": event.paymentversion}})
    result = CommandResult(command_id=cmd.command_id, payment=decision.snapshot)
    await uow.save_result(cmd.organization_id, cmd.command_id, result.model_dump(mode="json"))
    return result


async def create(store: CommandStore, cmd: CreatePayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
        return await _create(uow, cmd, source, clock)


async def modify(store: CommandStore, cmd: ModifyPayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
        return await _modify(uow, cmd, source, clock)


async def _create(uow: UnitOfWork, cmd: CreatePayment, source: str, clock: Clock) -> CommandResult:
    if done := await _already_done(uow, cmd):
        return done
    decision = domain.decide_create(cmd, clock())
    if not await uow.insert_payment(decision.snapshot):
        raise Rejected(RejectionKind.CONFLICT, f"a payment with id {cmd.payment_id!r} already exists")
    return await _finish(uow, cmd, decision, source)


async def _modify(uow: UnitOfWork, cmd: ModifyPayment, source: str, clock: Clock) -> CommandResult:
    if done := await _already_done(uow, cmd):
        return done
    for _ in range(MAX_RACE_RETRIES):
        current = await uow.get_payment(cmd.organization_id, cmd.payment_id)
        decision = domain.decide_modify(current, cmd, clock())
        assert current is not None  # decide_modify rejects a missing payment
        if await uow.update_payment(decision.snapshot, current.version):
            return await _finish(uow, cmd, decision, source)
        if cmd.expected_version is not None:
            # Another command won the race on this version: the caller must re-read.
            fresh = await uow.get_payment(cmd.organization_id, cmd.payment_id)
            raise Rejected(
                RejectionKind.VERSION_MISMATCH,
                f"payment {cmd.payment_id!r} changed concurrently; it is no longer at version "
                f"{cmd.expected_version}",
                current_version=fresh.version if fresh else None,
            )
    raise Rejected(RejectionKind.CONFLICT, f"payment {cmd.payment_id!r} is changing too often; retry")


async def run_batch(
    store: CommandStore, batch: CommandBatch, *, source: str, clock: Clock = utc_now
) -> CommandBatchResult:
    """Group commit: every item in ONE transaction, in arrival order, each behind its own
    savepoint. An item runs exactly as alone (claim, rules, write, outbox row, result), so
    a later item on the same payment sees the earlier one's write; a refused item rolls
    back to its savepoint only. Anything else (database down, deadlock) aborts the whole
    transaction: nothing of the batch is written and the activity is retried."""
    outcomes: list[CommandResult | Rejection] = []
    async with store.unit_of_work() as uow:
        for item in batch.items:
            try:
                async with uow.savepoint():
                    if isinstance(item, CreatePayment):
                        outcomes.append(await _create(uow, item, source, clock))
                    else:
                        outcomes.append(await _modify(uow, item, source, clock))
            except Rejected as rejected:
                outcomes.append(Rejection.of(rejected))
    return CommandBatchResult(batch_id=batch.batch_id, items=outcomes)


async def bulk_create(
    store: CommandStore, cmd: BulkCreatePayments, *, source: str, clock: Clock = utc_now
) -> BulkCreateResult:
    """Each item is its own command (and transaction): one result per item."""
    items = []
    for index, item in enumerate(cmd.items):
        try:
            done = await create(store, item, source=source, clock=clock)
            items.append(BulkItemResult(index=index, payment=done.payment))
        except Rejected as rejected:
            items.append(BulkItemResult(index=index, rejection=Rejection.of(rejected)))
    return BulkCreateResult(command_id=cmd.command_id, items=items)
