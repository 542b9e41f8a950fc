"""The outbox relay: PostgreSQL ``outbox`` rows -> Kafka ``payments.events``.

At least once, in version order per payment:

- a batch is claimed in one transaction: first the payment ids with unpublished rows,
  each guarded by a transaction-level advisory lock (so several relay replicas never
  publish the same payment concurrently), then their rows in id order with
  ``FOR UPDATE SKIP LOCKED``;
- the rows are sent (``acks=all``, key = payment id, header content-type) and awaited,
  then marked published in the same transaction. A crash or broker error before the
  commit rolls back: the rows are sent again (duplicates are harmless, consumers dedupe
  on the event id and payment version);
- it wakes on ``LISTEN payments_outbox`` (NOTIFY at each command's commit) with a polling
  fallback, backs off while Kafka or Postgres is down (and while its topic is missing:
  the deployment creates it, the relay only with PAYMENTS_KAFKA_CREATE_TOPICS), exports
  backlog and lag gauges and purges published rows older than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from services.command.adapters.store import OUTBOX_CHANNEL
from services.command.bootstrap import open_store
from services.command.config import CommandSettings
from shared.events import CONTENT_TYPE
from shared.kafka import ensure_topics, event_topics, producer_options
from shared.ops import serving, until_stopped_or_done
from shared.telemetry import OUTBOX_BACKLOG, OUTBOX_PUBLISH_LAG, bind_log_context, log_context

log = logging.getLogger("payments.command.relay")
_KEY_LOCK_SEED = 724_311_002

CLAIM_KEYS = """
SELECT payment_id FROM (
    SELECT payment_id, min(id) AS first_id FROM outbox WHERE published_at IS NULL
    GROUP BY payment_id ORDER BY first_id LIMIT $1
) AS pending
WHERE pg_try_advisory_xact_lock(hashtextextended(payment_id, $2))
"""
CLAIM_ROWS = """
SELECT id, event_id, payment_id, payload FROM outbox
WHERE published_at IS NULL AND payment_id = ANY($1::text[])
ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
"""
BACKLOG = "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS lag FROM outbox WHERE published_at IS NULL"
PURGE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) LIMIT 5000)
"""
# A key older than its retention no longer replays: the same key then runs as a new request.
PURGE_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE (organization_id, key) IN (
    SELECT organization_id, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1) LIMIT 5000)
"""
PURGE_BATCH = 5000


async def _delete_in_batches(conn: asyncpg.Connection, statement: str, retention_seconds: float) -> int:
    total = 0
    while True:  # bounded batches: no long lock on a large backlog of expired rows
        deleted = int((await conn.execute(statement, float(retention_seconds))).split()[-1])
        total += deleted
        if deleted < PURGE_BATCH:
            return total


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, settings: CommandSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.topic = settings.events_topic
        self._producer: AIOKafkaProducer | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._last_purge = 0.0
        self.published = 0  # events sent and marked, since start
        self.kafka_ok = False
        self.last_error = "not connected yet"  # why kafka_ok is False, for the readiness probe

    # ------------------------------------------------------------------ connections

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.settings.database_url)
            await self._listener.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            self._listener = None  # polling still works; LISTEN is retried next round
            log.warning("LISTEN %s unavailable (%s); polling", OUTBOX_CHANNEL, exc)

    async def _ensure_topic(self) -> None:
        spec = next(t for t in event_topics(self.settings) if t.name == self.topic)
        for name in await ensure_topics(self.settings.kafka_bootstrap, [spec], create=self.settings.kafka_create_topics):
            log.info("created topic %s", name)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self._ensure_topic()
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                **producer_options(self.settings),
                request_timeout_ms=int(self.settings.relay_send_timeout_seconds * 1000),
                retry_backoff_ms=200,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def close(self) -> None:
        await self._drop_producer()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    # ------------------------------------------------------------------ work

    async def publish_batch(self) -> int:
        """Publish one batch; returns how many rows were published."""
        producer = await self._ensure_producer()
        limit = self.settings.relay_batch_size
        async with self.pool.acquire() as conn, conn.transaction():
            keys = [r["payment_id"] for r in await conn.fetch(CLAIM_KEYS, limit, _KEY_LOCK_SEED)]
            if not keys:
                return 0
            rows = await conn.fetch(CLAIM_ROWS, keys, limit)
            if not rows:
                return 0
            headers = [("content-type", CONTENT_TYPE.encode())]
            pending = [
                await producer.send(self.topic, value=bytes(row["payload"]), key=row["payment_id"].encode(),
                                    headers=headers)
                for row in rows
            ]
            await asyncio.wait_for(asyncio.gather(*pending), self.settings.relay_send_timeout_seconds)
            await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                               [row["id"] for row in rows])
        self.published += len(rows)
        # Every event id, so one payment can be followed from its command to the projection.
        log.info("published %d events", len(rows), extra={"fields": {
            "event_ids": [str(row["event_id"]) for row in rows], "payment_ids": sorted({r["payment_id"] for r in rows})}})
        return len(rows)

    async def refresh_metrics(self) -> tuple[int, float]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(BACKLOG)
        backlog, lag = int(row["n"]), float(row["lag"] or 0.0)
        OUTBOX_BACKLOG.set(backlog)
        OUTBOX_PUBLISH_LAG.set(max(lag, 0.0))
        return backlog, lag

    async def purge(self, *, force: bool = False) -> int:
        """Delete published outbox rows and idempotency keys past their retention."""
        now = time.monotonic()
        if not force and now - self._last_purge < self.settings.outbox_purge_interval_seconds:
            return 0
        self._last_purge = now
        async with self.pool.acquire() as conn:
            rows = await _delete_in_batches(conn, PURGE, self.settings.outbox_retention_seconds)
            keys = await _delete_in_batches(conn, PURGE_IDEMPOTENCY_KEYS,
                                            self.settings.idempotency_key_retention_seconds)
        if rows or keys:
            log.info("purged %d published outbox rows and %d expired idempotency keys", rows, keys)
        return rows

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        token = bind_log_context(component="relay", topic=self.topic)
        backoff = self.settings.relay_retry_backoff_seconds
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._ensure_listener()
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
        finally:
            log_context.reset(token)
            await self.close()


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
