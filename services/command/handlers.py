"""The service layer: run one command against the store in one transaction.

validate (rules) -> execute (payment row) -> publish (outbox row), all in the same
transaction; the command id is claimed first, so a retried activity returns the first
result instead of applying the command twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from services.command import domain
from services.command.adapters.store import PaymentStore, UnitOfWork
from services.command.commands import (
    HTTP_STATUS,
    TITLES,
    BatchItemResult,
    BatchResult,
    BulkCreatePayments,
    CommandResult,
    CreatePayment,
    ModifyPayment,
    Problem,
    RejectionKind,
    command_type,
)
from services.command.domain import Rejected
from shared.http import PROBLEM_BASE
from shared.payment_view import Payment

log = logging.getLogger("payments.command")
Clock = Callable[[], datetime]
MAX_RACE_RETRIES = 5


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


async def create(store: PaymentStore, cmd: CreatePayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
        if done := await _already_done(uow, cmd):
            return done
        decision = domain.decide_create(cmd, clock())
        if not await uow.insert_payment(decision.snapshot):
            raise Rejected(RejectionKind.CONFLICT, f"a payment with id {cmd.payment_id!r} already exists")
        return await _finish(uow, cmd, decision, source)


async def modify(store: PaymentStore, cmd: ModifyPayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
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


def problem_of(rejection: Rejected, instance: str | None = None) -> Problem:
    return Problem(
        type=PROBLEM_BASE + rejection.kind.value.replace("_", "-"),
        title=TITLES[rejection.kind],
        status=HTTP_STATUS[rejection.kind],
        detail=rejection.detail,
        instance=instance,
        current_version=rejection.current_version,
    )


async def bulk_create(
    store: PaymentStore, cmd: BulkCreatePayments, *, source: str, clock: Clock = utc_now
) -> BatchResult:
    """Each item is its own command (and transaction): one result per item."""
    results = []
    for index, item in enumerate(cmd.items):
        try:
            done = await create(store, item, source=source, clock=clock)
            results.append(BatchItemResult(index=index, status=201, payment=Payment.of(done.payment)))
        except Rejected as rejection:
            problem = problem_of(rejection)
            results.append(BatchItemResult(index=index, status=problem.status, problem=problem))
    return BatchResult(command_id=cmd.command_id, results=results)
