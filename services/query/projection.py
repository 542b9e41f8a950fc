"""The projection, the query side's handler of payment events: parse each message, isolate
the poison, apply the rest in one transaction, announce the writes to the waiting reads,
bump the changed organizations' cache epochs. It works over ports (services/query/ports.py),
so it returns only once every message is applied or dead-lettered, and the consumer then
commits (entrypoints/projector.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from services.query import poison
from services.query.domain import Outcome
from services.query.poison import DeadLetterKind
from services.query.ports import AppliedBatch, DeadLetter, ProjectionStore, Readers
from services.query.projection_health import StallWatch, event_id_of, report_batch, type_label
from shared.dlq import dlq_headers
from shared.events import InvalidEvent, PaymentEvent, parse_event
from shared.telemetry import PROJECTION_DEAD_LETTERS, PROJECTION_EVENTS, bind_log_context, log_context
from shared.tracing import carrier_of, processing_spans

log = logging.getLogger("payments.query.projector")

UNTRUSTED_SOURCE = "untrusted source"


class Projection:
    """``handle(messages)``: Kafka records (topic, partition, offset, key, value, headers)
    in, read model written. Transient failures are retried with backoff and jitter, and
    any other failure too while ``health`` (``/readyz``) says the projector is stalled; it
    raises only while the process stops (``stopping``), so the consuming loop never dies."""

    def __init__(self, store: ProjectionStore, readers: Readers, dead_letter: DeadLetter, *, group: str,
                 trusted_sources: set[str]) -> None:
        self.store = store
        self.readers = readers
        self.dead_letter = dead_letter
        self.group = group
        self.trusted_sources = trusted_sources
        self.pending_bumps: set[str] = set()
        self.health = StallWatch()
        self.stopping = False
        self._recovered = False
        self._bumps_lock = asyncio.Lock()

    async def recover(self) -> None:
        """Take over what a killed predecessor left: its open transactions, its unflushed bumps."""
        unflushed = await self.store.recover()
        if unflushed:
            log.info("cache bumps left by a previous projector", extra={"fields": {"organizations": len(unflushed)}})
        self.pending_bumps |= unflushed
        self._recovered = True

    # ----------------------------------------------------------------- one batch

    async def handle(self, messages: Sequence[Any]) -> None:
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
                self.health.failed(exc, attempt, messages[0] if messages else None,
                                   transient=self.store.is_transient(exc))
                await asyncio.sleep(poison.backoff(attempt))

    async def _handle(self, messages: Sequence[Any], settled: set[tuple[int, int]]) -> None:
        valid: list[tuple[Any, PaymentEvent]] = []
        for msg in messages:
            if (msg.partition, msg.offset) in settled:
                continue
            try:
                valid.append((msg, self._parse(msg.value)))
            except InvalidEvent as exc:
                await self._reject(msg, exc.reason, DeadLetterKind.INVALID)
                settled.add((msg.partition, msg.offset))

        async def apply(items: list[tuple[Any, PaymentEvent]], dry_run: bool) -> AppliedBatch:
            return await self._apply([e for _, e in items], dry_run=dry_run)

        async def dead_letter(item: tuple[Any, PaymentEvent], error: BaseException) -> None:
            msg, event = item
            kind = self.store.refusal(error)
            await self._reject(msg, poison.describe(kind, error), kind, event)
            settled.add((msg.partition, msg.offset))

        # The real work, traced: a span per event linked to the event's trace (shared/tracing.py).
        with processing_spans("project", [(msg.headers, carrier_of(e), _span_attributes(e)) for msg, e in valid]) as spans:
            span_of = {(m.partition, m.offset): s for (m, _), s in zip(valid, spans, strict=True)}
            valid, result = await poison.apply_without_poison(valid, apply, dead_letter, self.store.is_transient)
            if result is not None:
                events = [e for _, e in valid]
                report_batch(events, result.outcomes, result.newest_event_time)
                for (msg, _), outcome in zip(valid, result.outcomes, strict=True):
                    if (span := span_of.pop((msg.partition, msg.offset))) is not None:
                        span.set_attribute("payments.outcome", outcome)
                # First the reads waiting for these payments (they read the read model, not the cache).
                await self.readers.announce(
                    (e.organizationid, e.subject) for e, o in zip(events, result.outcomes, strict=True)
                    if o == Outcome.APPLIED)
                async with self._bumps_lock:
                    self.pending_bumps |= result.organizations
            await self.flush_bumps()
            for span in span_of.values():  # set aside by the poison search
                if span is not None:
                    span.set_attribute("payments.outcome", Outcome.DEAD_LETTERED)

    def _parse(self, raw: bytes | None) -> PaymentEvent:
        """The contract, then the trust boundary: only the command service (and sources
        trusted on purpose) may write the read model; others send commands to the intake."""
        event = parse_event(raw)
        if event.source not in self.trusted_sources:
            raise InvalidEvent(UNTRUSTED_SOURCE)
        return event

    async def _apply(self, events: list[PaymentEvent], *, dry_run: bool = False) -> AppliedBatch:
        """Apply (or try) ``events``, retrying transient errors; raises any other."""
        attempt = 0
        while True:
            ready = False  # until then a failure is not the events' fault: always retried
            try:
                if not self._recovered:
                    await self.recover()
                await self.store.refresh()
                ready = True
                return await self.store.apply(events, dry_run=dry_run)
            except Exception as exc:
                transient = self.store.is_transient(exc)
                if self.stopping or (ready and not transient):
                    raise
                attempt += 1
                self.health.failed(exc, attempt, None, transient=transient)
                await asyncio.sleep(poison.backoff(attempt))

    async def _reject(self, msg: Any, reason: str, kind: DeadLetterKind, event: PaymentEvent | None = None) -> None:
        label = type_label(msg.value, event)
        result = Outcome.INVALID if kind is DeadLetterKind.INVALID else Outcome.DEAD_LETTERED
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
        """Bump the cache epochs of the changed organizations, then forget them (here and
        in the store). The lock keeps a batch from adding one between bump and forgetting."""
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
                await self.readers.bump(orgs)
                await self.store.bumped(orgs)
                self.pending_bumps -= orgs
            except Exception as exc:  # noqa: BLE001 - retried with the next batch or tick
                log.warning("cache epoch bump failed; will retry", extra={"fields": {"error": repr(exc)[:200]}})


def _span_attributes(event: PaymentEvent) -> dict[str, object]:
    return {"payments.event_id": event.id, "payments.event_type": event.type.short,
            "payments.payment_id": event.subject, "payments.version": event.paymentversion}
