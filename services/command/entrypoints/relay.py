"""``payments relay``: the outbox to Kafka, at least once and in version order per payment.
Each round claims a batch (adapters/outbox.py), sends it and waits for every ack, then
marks it published in the claim's transaction, so a crash re-sends rather than loses
(consumers dedupe). It wakes on each commit's NOTIFY (polling besides), backs off while a
server is away, exports the backlog gauges and purges expired idempotency keys. Published
rows stay: the outbox is the permanent event log (migration 004).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from services.command.adapters.idempotency_records import PostgresIdempotencyRecords
from services.command.adapters.kafka_producer import KafkaProducer
from services.command.adapters.outbox import Outbox
from services.command.bootstrap import open_store
from services.command.config import CommandSettings
from shared.events import record_headers
from shared.kafka import ensure_topics, event_topics
from shared.ops import serving, until_stopped_or_done
from shared.telemetry import OUTBOX_BACKLOG, OUTBOX_PUBLISH_LAG, bind_log_context, log_context
from shared.tracing import cloudevent_carrier, resumed, untraced

log = logging.getLogger("payments.command.relay")


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, settings: CommandSettings) -> None:
        self.outbox = Outbox(pool, settings.database_url)
        self.keys = PostgresIdempotencyRecords(pool)
        self.settings = settings
        self.topic = settings.events_topic
        self._producer: KafkaProducer | None = None
        self._wake = asyncio.Event()
        self._last_purge = 0.0
        self.published = 0  # events sent and marked, since start
        self.kafka_ok = False
        self.last_error = "not connected yet"  # why kafka_ok is False, for the readiness probe

    async def _ensure_topic(self) -> None:
        spec = next(t for t in event_topics(self.settings) if t.name == self.topic)
        for name in await ensure_topics(self.settings.kafka_bootstrap, [spec], create=self.settings.kafka_create_topics):
            log.info("created topic %s", name)

    async def _ensure_producer(self) -> KafkaProducer:
        if self._producer is None:
            await self._ensure_topic()
            producer = KafkaProducer(self.settings, retry_backoff_ms=200,
                                     request_timeout_ms=int(self.settings.relay_send_timeout_seconds * 1000))
            await producer.start()
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop(timeout=5)

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows were published."""
        producer = await self._ensure_producer()
        async with self.outbox.claim(self.settings.relay_batch_size) as rows:
            pending = []
            for row in rows:
                # This hop (the record's traceparent header) continues the event's trace
                # (its CloudEvent's traceparent, written with it in the outbox).
                with resumed(cloudevent_carrier(row.payload)):
                    pending.append(await producer.enqueue(self.topic, row.payment_id.encode(), row.payload,
                                                          record_headers()))
            await producer.acknowledged(pending, timeout=self.settings.relay_send_timeout_seconds)
        self.published += len(rows)
        if rows:  # every event id, so one payment can be followed from its command to the projection
            log.info("published %d events", len(rows), extra={"fields": {
                "event_ids": [row.event_id for row in rows], "payment_ids": sorted({r.payment_id for r in rows})}})
        return len(rows)

    async def refresh_metrics(self) -> tuple[int, float]:
        backlog, lag = await self.outbox.backlog()
        OUTBOX_BACKLOG.set(backlog)
        OUTBOX_PUBLISH_LAG.set(lag)
        return backlog, lag

    async def purge(self, *, force: bool = False) -> int:
        """Delete idempotency keys past their retention; how many. (Published outbox rows
        are the event log: never deleted.)"""
        now = time.monotonic()
        if not force and now - self._last_purge < self.settings.outbox_purge_interval_seconds:
            return 0
        self._last_purge = now
        keys = await self.keys.purge(self.settings.idempotency_key_retention_seconds)
        if keys:
            log.info("purged %d expired idempotency keys", keys)
        return keys

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        token = bind_log_context(component="relay", topic=self.topic)
        try:
            with untraced():  # polls and bookkeeping: only the records' sends are traced
                await self._rounds(stop)
        finally:
            log_context.reset(token)
            await self.close()

    async def _rounds(self, stop: asyncio.Event) -> None:
        backoff = self.settings.relay_retry_backoff_seconds
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.outbox.listen(self._wake.set)
                sent = await self.publish_batch()
                self.kafka_ok = True
                await self.refresh_metrics()
                await self.purge()
                backoff = self.settings.relay_retry_backoff_seconds
            except Exception as exc:  # noqa: BLE001 - broker/database outages are retried forever
                self.kafka_ok = False
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("relay round failed, retrying in %.1fs: %s: %s", backoff, type(exc).__name__, exc)
                with contextlib.suppress(Exception):
                    await self.refresh_metrics()
                await self._drop_producer()
                await _wait_any(stop, None, backoff)
                backoff = min(backoff * 2, self.settings.relay_max_backoff_seconds)
                continue
            if sent < self.settings.relay_batch_size:
                await _wait_any(stop, self._wake, self.settings.relay_poll_interval_seconds)

    async def close(self) -> None:
        await self._drop_producer()
        await self.outbox.close()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters: list[asyncio.Task[Any]] = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_relay(settings: CommandSettings) -> None:
    """``payments relay``: the outbox to Kafka (needs PostgreSQL and Kafka, not Temporal)."""
    async with open_store(settings, pool_size=2) as store:
        relay = OutboxRelay(store.pool, settings)

        async def kafka() -> None:
            if not relay.kafka_ok:
                raise RuntimeError(f"the last publish round failed: {relay.last_error}")

        async with serving("payments outbox relay", settings.host, settings.relay_metrics_port,
                           {"postgres": store.ping, "kafka": kafka}):
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            log.info("relay publishing to %s on %s", settings.events_topic, settings.kafka_bootstrap)
            try:
                await until_stopped_or_done(task)
            finally:
                stop.set()
                await task
            log.info("relay stopped", extra={"fields": {"published": relay.published}})
