"""The command service layer: one command, or a group-committed batch of them
(:func:`run_batch`), in one unit of work: rules, payment row, outbox row and result
commit together, and a command id already claimed returns its first result instead of
running twice. Refusals are typed (``Rejected``); the wire is the edges' business.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from services.command import domain
from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    BulkItemResult,
    CommandBatch,
    CommandBatchResult,
    CommandResult,
    CreatePayment,
    ExpiryOutcome,
    ExpiryTimer,
    ModifyPayment,
    Rejected,
    Rejection,
    RejectionKind,
    command_type,
)
from services.command.ports import Claim, CommandStore, UnitOfWork
from shared.events import PaymentEvent
from shared.payment import PaymentAction, PaymentSnapshot

log = logging.getLogger("payments.command")
Clock = Callable[[], datetime]
MAX_RACE_RETRIES = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _already_done(uow: UnitOfWork, cmd: ModifyPayment) -> CommandResult | None:
    claimed = await uow.claim_command(cmd.organization_id, cmd.command_id, command_type(cmd), cmd.payment_id)
    return None if claimed else await _earlier_result(uow, cmd)


async def _finish(uow: UnitOfWork, cmd: ModifyPayment, decision: domain.Decision,
                  source: str) -> CommandResult:
    event = decision.event(source, trace=cmd.trace())
    await uow.add_events([event])
    _staged(event)
    result = CommandResult(command_id=cmd.command_id, payment=decision.snapshot)
    await uow.save_result(cmd.organization_id, cmd.command_id, result.model_dump(mode="json"))
    return result


def _staged(event: PaymentEvent) -> None:
    log.info("%s event staged in the command's transaction", event.type.short, extra={"fields": {
        "event_id": event.id, "payment_id": event.subject, "version": event.paymentversion}})


async def create(store: CommandStore, cmd: CreatePayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
        return await _create(uow, cmd, source, clock)


async def modify(store: CommandStore, cmd: ModifyPayment, *, source: str, clock: Clock = utc_now) -> CommandResult:
    async with store.unit_of_work() as uow:
        return await _modify(uow, cmd, source, clock)


async def _create(uow: UnitOfWork, cmd: CreatePayment, source: str, clock: Clock) -> CommandResult:
    """One create: the rules, then its command id claimed with the result it will have
    (one statement), the payment inserted, its event staged. A command that ran before
    returns its first result; a taken payment id refuses it (raised: the claim rolls back)."""
    try:
        decision = domain.decide_create(cmd, clock())
    except Rejected:
        if (earlier := await _earlier_result(uow, cmd)) is not None:
            return earlier
        raise
    result = CommandResult(command_id=cmd.command_id, payment=decision.snapshot)
    claim = Claim(cmd.organization_id, cmd.command_id, "create", cmd.payment_id, result.model_dump(mode="json"))
    if not await uow.claim_commands([claim]):
        earlier = await _earlier_result(uow, cmd)
        assert earlier is not None  # only a claim with a result is not claimed anew
        return earlier
    if not await uow.insert_payments([decision.snapshot]):
        raise Rejected(RejectionKind.CONFLICT, f"a payment with id {cmd.payment_id!r} already exists")
    event = decision.event(source, trace=cmd.trace())
    await uow.add_events([event])
    _staged(event)
    return result


async def _earlier_result(uow: UnitOfWork, cmd: CreatePayment | ModifyPayment) -> CommandResult | None:
    stored = await uow.command_result(cmd.organization_id, cmd.command_id)
    return CommandResult.model_validate(stored) if stored is not None else None


async def _create_many(uow: UnitOfWork, cmds: Sequence[CreatePayment], source: str,
                       clock: Clock) -> list[CommandResult | Rejected]:
    """Creates whose command ids and payment ids are all distinct, set-based: a handful of
    statements for all of them rather than a handful each (a group-committed batch's
    cost is its round trips). Each is still its own command: a command id claimed before
    returns its first result, the rules or a taken payment id refuse it (its claim
    released), and otherwise its payment, outbox row and result are written."""
    now = clock()
    outcomes: dict[int, CommandResult | Rejected] = {}
    decided: dict[int, domain.Decision] = {}
    for i, cmd in enumerate(cmds):
        try:
            decided[i] = domain.decide_create(cmd, now)
        except Rejected as rejected:
            outcomes[i] = rejected  # unless the command ran before (below)
    results = {i: CommandResult(command_id=cmds[i].command_id, payment=d.snapshot) for i, d in decided.items()}
    claimed = await uow.claim_commands([
        Claim(cmds[i].organization_id, cmds[i].command_id, "create", cmds[i].payment_id,
              results[i].model_dump(mode="json")) for i in decided]) if decided else set()
    fresh = [i for i in decided if _key(cmds[i]) in claimed]
    fresh_set = set(fresh)
    if earlier := [i for i in range(len(cmds)) if i not in fresh_set]:
        stored = await uow.command_results([_key(cmds[i]) for i in earlier])
        outcomes |= {i: CommandResult.model_validate(stored[_key(cmds[i])]) for i in earlier
                     if _key(cmds[i]) in stored}
    inserted = await uow.insert_payments([decided[i].snapshot for i in fresh]) if fresh else set()
    if taken := [i for i in fresh if (cmds[i].organization_id, cmds[i].payment_id) not in inserted]:
        await uow.release_claims([_key(cmds[i]) for i in taken])
        outcomes |= {i: Rejected(RejectionKind.CONFLICT, f"a payment with id {cmds[i].payment_id!r} already exists")
                     for i in taken}
    created = [i for i in fresh if i not in outcomes]
    events = [decided[i].event(source, trace=cmds[i].trace()) for i in created]
    if events:
        await uow.add_events(events)
    for i, event in zip(created, events, strict=True):
        _staged(event)
        outcomes[i] = results[i]
    return [outcomes[i] for i in range(len(cmds))]


def _key(cmd: CreatePayment | ModifyPayment) -> tuple[str, str]:
    return cmd.organization_id, cmd.command_id


async def _modify(uow: UnitOfWork, cmd: ModifyPayment, source: str, clock: Clock) -> CommandResult:
    if done := await _already_done(uow, cmd):
        return done
    # A refund locks the payment: concurrent refunds then run one after the other, each
    # seeing what the previous one left (no retry can run out on them).
    lock = cmd.action is PaymentAction.REFUND
    for _ in range(MAX_RACE_RETRIES):
        current = await uow.get_payment(cmd.organization_id, cmd.payment_id, for_update=lock)
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


async def expire(store: CommandStore, timers: Sequence[ExpiryTimer], *, source: str,
                 clock: Clock = utc_now) -> ExpiryOutcome:
    """Timers fired: each payment expires, with its outbox row in its own transaction, only
    if it is still processing and the timer's deadline is still its deadline and has
    passed (domain.expiry_deadline), so at most one expiry ever happens, whatever timers
    exist."""
    outcome = ExpiryOutcome()
    for timer in timers:
        async with store.unit_of_work() as uow:
            expired = await _expire(uow, timer, source, clock)
        if expired is True:
            outcome.early.append(timer)
        elif expired is not None:
            outcome.expired.append(expired)
    return outcome


async def _expire(uow: UnitOfWork, timer: ExpiryTimer, source: str, clock: Clock) -> PaymentSnapshot | bool | None:
    """The expired payment, True if the deadline is not reached yet, None if nothing to do."""
    for _ in range(MAX_RACE_RETRIES):
        current = await uow.get_payment(timer.organization_id, timer.payment_id)
        deadline, now = domain.expiry_deadline(current), clock()
        if deadline is None or deadline != timer.expires_at:
            return None
        if now < deadline:
            return True
        assert current is not None  # it has a deadline
        decision = domain.decide_expire(current, now)
        if await uow.update_payment(decision.snapshot, current.version):
            event = decision.event(source)
            await uow.add_events([event])
            _staged(event)
            return decision.snapshot
    # Not a rejection: the timer's activity retries until the payment settles down.
    raise RuntimeError(f"payment {timer.payment_id!r} is changing too often; retry")


async def run_batch(
    store: CommandStore, batch: CommandBatch, *, source: str, clock: Clock = utc_now
) -> CommandBatchResult:
    """Group commit: every item in ONE transaction. The creates independent of every
    other item run together, set-based (:func:`_create_many`); the other items in arrival
    order, each behind its own savepoint, exactly as alone (claim, rules, write, outbox
    row, result), so a later item on the same payment sees the earlier one's write and a
    refused item rolls back to its savepoint only. Anything else (database down, deadlock)
    aborts the whole transaction: nothing of the batch is written and the activity is
    retried."""
    items = batch.items
    together = _independent_creates(items)
    outcomes: dict[int, CommandResult | Rejection] = {}
    async with store.unit_of_work() as uow:
        # Creates that share no command id and no payment with any other item commute with
        # everything else in the batch: they run first, together; the rest in arrival order.
        done = await _create_many(uow, [items[i] for i in together], source, clock) if together else []
        for i, outcome in zip(together, done, strict=True):
            outcomes[i] = Rejection.of(outcome) if isinstance(outcome, Rejected) else outcome
        for i, item in enumerate(items):
            if i in outcomes:
                continue
            try:
                async with uow.savepoint():
                    if isinstance(item, CreatePayment):
                        outcomes[i] = await _create(uow, item, source, clock)
                    else:
                        outcomes[i] = await _modify(uow, item, source, clock)
            except Rejected as rejected:
                outcomes[i] = Rejection.of(rejected)
    return CommandBatchResult(batch_id=batch.batch_id, items=[outcomes[i] for i in range(len(items))])


def _independent_creates(items: Sequence[CreatePayment | ModifyPayment]) -> list[int]:
    """Indexes of the creates whose command id and payment occur once in ``items``."""
    keys = Counter(k for item in items for k in (("c", *_key(item)), ("p", item.organization_id, item.payment_id)))
    return [i for i, item in enumerate(items) if isinstance(item, CreatePayment)
            and keys["c", *_key(item)] == 1 and keys["p", item.organization_id, item.payment_id] == 1]


async def bulk_create(
    store: CommandStore, cmd: BulkCreatePayments, *, source: str, clock: Clock = utc_now
) -> BulkCreateResult:
    """Each item is its own command (and transaction): one result per item; an item with no
    trace context of its own carries the bulk command's."""
    items = []
    for index, item in enumerate(cmd.items):
        if not item.traceparent and cmd.traceparent:
            item = item.model_copy(update=cmd.trace())
        try:
            done = await create(store, item, source=source, clock=clock)
            items.append(BulkItemResult(index=index, payment=done.payment))
        except Rejected as rejected:
            items.append(BulkItemResult(index=index, rejection=Rejection.of(rejected)))
    return BulkCreateResult(command_id=cmd.command_id, items=items)
