"""The projector's batch handler: payment events -> the MongoDB read model.

Consumer group ``PAYMENTS_PROJECTOR_GROUP`` on the events topic (the Kafka side is
:mod:`services.query.entrypoints.projector`; the process).
Per batch:

1. parse every message against the event contract; invalid ones go to the dead-letter
   topic (original bytes as value, the reason and the origin in headers);
2. apply the valid ones (the decisions of :mod:`services.query.domain`, written by
   :func:`batch_writes.apply_batch` in one MongoDB transaction), retrying transient
   MongoDB errors with backoff and jitter; an event the read model
   refuses (or that makes our code fail) is found by :mod:`poison`, dead-lettered, and
   the batch applied without it;
3. announce the payments written to the reads waiting for them (adapters/projected_signal.py),
   and bump the Redis cache epoch of every organization that changed (recorded in the
   batch's transaction until Redis took it, so a crash cannot lose a bump);
4. only then return, so the consumer commits the batch's offsets only after the read
   model write (a SIGKILL mid-batch leaves them uncommitted and the batch is projected
   again, harmlessly).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from services.query import domain, poison
from services.query.adapters.batch_writes import AppliedBatch, PendingBumps, RecordedSessions, apply_batch
from services.query.adapters.read_model import META
from services.query.bootstrap import QueryRuntime
from services.query.projection_health import StallWatch, event_id_of, report_batch, type_label
from shared.dlq import dlq_headers
from shared.events import InvalidEvent, PaymentEvent, parse_event
from shared.telemetry import (
    PROJECTION_DEAD_LETTERS,
    PROJECTION_EVENTS,
    bind_log_context,
    log_context,
)

log = logging.getLogger("payments.query.projector")

UNTRUSTED_SOURCE = "untrusted source"


class Projector:
    """The batch handler (Kafka records in, read model written).

    :meth:`handle` returns only when every message of the batch is applied or
    dead-lettered: a poison event is isolated (:mod:`poison`), transient failures are
    retried with backoff and jitter, and any other failure is retried too while
    ``/readyz`` (``health.check``) and the metrics say the projector is stalled.
    It never raises, except while the process stops, so the consuming loop never dies.
    """

    def __init__(self, runtime: QueryRuntime, dead_letter: Any, group: str) -> None:
        self.runtime = runtime
        self.meta = runtime.read_model.db[META]  # the projector's bookkeeping beside the pointer
        self.dead_letter = dead_letter  # async (key, value, headers) -> None
        self.group = group
        self.pending_bumps: set[str] = set()
        self.pending = PendingBumps(self.meta, group, uuid.uuid4().hex)
        self.sessions = RecordedSessions(self.meta, group)
        self.health = StallWatch()
        self.stopping = False
        self._recovered = False
        self._bumps_lock = asyncio.Lock()
        self.trusted_sources = runtime.settings.trusted_sources()

    async def recover(self) -> None:
        """Abort the transactions a killed predecessor of this consumer group left open
        (:class:`RecordedSessions`), and take over the cache bumps it had not flushed."""
        killed = await self.sessions.kill_recorded(self.runtime.mongo)
        if killed:
            log.info("aborted transactions of previous projector sessions", extra={"fields": {"sessions": killed}})
        unflushed = await self.pending.adopt()
        if unflushed:
            log.info("cache bumps left by a previous projector", extra={"fields": {"organizations": len(unflushed)}})
        self.pending_bumps |= unflushed
        self._recovered = True

    # ----------------------------------------------------------------- one batch

    async def handle(self, messages: Sequence[Any]) -> None:
        """``messages``: Kafka records (topic, partition, offset, key, value, headers)."""
        settled: set[tuple[int, int]] = set()  # dead-lettered already: not again on a retry
        attempt = 0
        while True:
            try:
                await self._handle(messages, settled)
                self.health.progressed()
                return
            except Exception as exc:
                if self.stopping:
                    raise
                attempt += 1
                self.health.failed(exc, attempt, messages[0] if messages else None)
                await asyncio.sleep(poison.backoff(attempt))

    async def _handle(self, messages: Sequence[Any], settled: set[tuple[int, int]]) -> None:
        valid: list[tuple[Any, PaymentEvent]] = []
        for msg in messages:
            if (msg.partition, msg.offset) in settled:
                continue
            try:
                valid.append((msg, self._parse(msg.value)))
            except InvalidEvent as exc:
                await self._reject(msg, exc.reason, poison.INVALID)
                settled.add((msg.partition, msg.offset))

        async def apply(items: list[tuple[Any, PaymentEvent]], dry_run: bool) -> AppliedBatch:
            return await self._apply([e for _, e in items], dry_run=dry_run)

        async def dead_letter(item: tuple[Any, PaymentEvent], error: BaseException) -> None:
            msg, event = item
            await self._reject(msg, poison.describe(error), poison.reason_class(error), event)
            settled.add((msg.partition, msg.offset))

        valid, result = await poison.apply_without_poison(valid, apply, dead_letter)
        if result is not None:
            events = [e for _, e in valid]
            report_batch(events, result.outcomes, result.newest_event_time)
            # First the reads waiting for these payments (they read MongoDB, not the cache).
            await self.runtime.cache.announce(
                (e.organizationid, e.subject) for e, o in zip(events, result.outcomes, strict=True)
                if o == domain.APPLIED)
            async with self._bumps_lock:
                self.pending_bumps |= result.organizations
        await self.flush_bumps()

    def _parse(self, raw: bytes | None) -> PaymentEvent:
        """The contract, then the trust boundary: only the command service (and sources
        trusted on purpose) may write the read model; others send commands to the intake."""
        event = parse_event(raw)
        if event.source not in self.trusted_sources:
            raise InvalidEvent(UNTRUSTED_SOURCE)
        return event

    async def _apply(self, events: list[PaymentEvent], *, dry_run: bool = False) -> AppliedBatch:
        """Apply (or try) ``events``, retrying transient MongoDB errors; raises any other."""
        attempt = 0
        while True:
            ready = False  # until then a failure is not the events' fault: always retried
            try:
                if not self._recovered:
                    await self.recover()
                cols = await self.runtime.read_model.active(fresh=True)
                ready = True
                return await apply_batch(self.runtime.mongo, cols, events, self.sessions.record,
                                         pending=self.pending, dry_run=dry_run)
            except Exception as exc:
                if self.stopping or (ready and not poison.is_transient(exc)):
                    raise
                attempt += 1
                self.health.failed(exc, attempt, None)
                await asyncio.sleep(poison.backoff(attempt))

    async def _reject(self, msg: Any, reason: str, kind: str, event: PaymentEvent | None = None) -> None:
        label = type_label(msg.value, event)
        result = domain.INVALID if kind == poison.INVALID else domain.DEAD_LETTERED
        PROJECTION_EVENTS.labels(label, result).inc()
        headers = dlq_headers(reason, msg.topic, msg.partition, msg.offset, self.group,
                              list(msg.headers or []), kind=kind)
        await self.dead_letter(msg.key, msg.value, headers)
        PROJECTION_DEAD_LETTERS.labels(kind).inc()
        token = bind_log_context(event_id=event.id if event else event_id_of(msg.value))
        try:
            log.warning("event sent to the dead-letter topic", extra={"fields": {
                "kind": kind, "reason": reason[:500], "partition": msg.partition, "offset": msg.offset}})
        finally:
            log_context.reset(token)

    # ----------------------------------------------------------------- cache

    async def flush_bumps(self) -> None:
        """Bump the cache epochs of the changed organizations, then forget them
        (in memory and in the read model). The lock keeps a batch from adding an
        organization between the bump and the forgetting."""
        if not self._recovered:  # an idle restarted projector still owes its predecessor's bumps
            try:
                await self.recover()
            except Exception as exc:  # noqa: BLE001 - retried at the next tick
                log.warning("recovery failed; will retry", extra={"fields": {"error": repr(exc)[:200]}})
                return
        async with self._bumps_lock:
            if not self.pending_bumps:
                return
            orgs = set(self.pending_bumps)
            try:
                await self.runtime.cache.bump(orgs)
                await self.pending.remove(orgs)
                self.pending_bumps -= orgs
            except Exception as exc:  # noqa: BLE001 - retried with the next batch or tick
                log.warning("cache epoch bump failed; will retry", extra={"fields": {"error": repr(exc)[:200]}})
