"""``payments projector``: the consumer loop (aiokafka, in the process's own event loop)
around the projection. Each poll is handed to the projection, which returns once every
record is applied or dead-lettered; only then are the offsets committed, so a SIGKILL
re-delivers the batch and projecting it again changes nothing. A rebalance waits for the
batch in hand. Why not faust: docs/design.md section 11.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError

from services.query.bootstrap import open_projection, ops_checks, query_runtime
from services.query.projection import Projection
from shared.kafka import ensure_topics, event_topics, group_consumer, partition_offsets, stop_clients, topic_losses
from shared.ops import serving, until_stopped
from shared.settings import Settings
from shared.tracing import untraced

log = logging.getLogger("payments.query.projector")


class _FinishBatchBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: ProjectorConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.owner.batch_lock:  # the batch in hand finishes and commits first
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned", extra={"fields": {"partitions": sorted(tp.partition for tp in assigned)}})


class ProjectorConsumer:
    """``handle(records)`` is the projection's; ``run(stop)`` consumes until ``stop`` is set."""

    def __init__(self, settings: Settings, group: str, *, batch_size: int = 500, batch_wait: float = 0.0,
                 fetch_max_wait_ms: int | None = None) -> None:
        self.settings = settings
        self.group = group
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.fetch_max_wait_ms = fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms
        self.batch_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        s = self.settings
        self._consumer = group_consumer(
            s, group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.batch_size, fetch_max_wait_ms=self.fetch_max_wait_ms)
        self._consumer.subscribe([s.events_topic], listener=_FinishBatchBeforeRevoke(self))
        await self._consumer.start()

    async def stop(self) -> None:
        await stop_clients(self._consumer)

    async def poll(self) -> list[ConsumerRecord]:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=1000, max_records=self.batch_size)
        records = [r for rs in batches.values() for r in rs]
        if records and self.batch_wait > 0 and len(records) < self.batch_size:
            more = await self._consumer.getmany(timeout_ms=int(self.batch_wait * 1000),
                                                max_records=self.batch_size - len(records))
            records += [r for rs in more.values() for r in rs]
        return records

    async def commit(self, records: Sequence[ConsumerRecord]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(partition_offsets(records))
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved the partition meanwhile: its new owner projects these again (harmless).
            log.warning("offset commit refused after a rebalance: %s", exc)

    async def run(self, handle: Any, stop: asyncio.Event) -> None:
        """Poll, ``await handle(records)``, commit; until ``stop`` is set. ``handle`` raises
        only while the process stops (then nothing is committed). Broker errors are logged
        and polling goes on after a pause; an offset left uncommitted is covered by the
        next batch's commit."""
        while not stop.is_set():
            try:
                records = await self.poll()
                if not records:
                    continue
                async with self.batch_lock:
                    await handle(records)
                    await self.commit(records)
            except Exception as exc:  # noqa: BLE001 - broker errors: poll again after a pause
                if stop.is_set():
                    raise
                log.warning("projector poll failed, retrying: %r", exc)
                await asyncio.sleep(1.0)


class RetentionCheck:
    """``/readyz``'s ``events_topic_retention`` (degraded, not down: shared/http.py): the
    events topic's configs, read back from the broker at most once a minute, must keep
    every event, or a later ``payments replay`` from the topic would rebuild from part of them."""

    EVERY = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._checked = (-self.EVERY, "")

    async def check(self) -> None:
        at, problem = self._checked
        if time.monotonic() - at >= self.EVERY:
            losses = await topic_losses(self.settings.kafka_bootstrap, self.settings.events_topic)
            problem = (f"{self.settings.events_topic} would lose events: {'; '.join(losses)}; rebuild with "
                       "`payments replay --from postgres`, fix with `payments topics --check`") if losses else ""
            self._checked = (time.monotonic(), problem)
        if problem:
            raise RuntimeError(problem)


BUMP_RETRY_SECONDS = 1.0  # how often cache-epoch bumps that failed are tried again


async def _retry_bumps(projector: Projection) -> None:
    with untraced():  # a timer: no trace a second
        while True:
            await asyncio.sleep(BUMP_RETRY_SECONDS)
            await projector.flush_bumps()


async def run_projector(settings: Settings, *, group: str | None = None, batch_size: int = 500,
                        batch_wait: float = 0.0, fetch_max_wait_ms: int | None = None) -> None:
    """``payments projector``: the events topic into the read model. Every Kafka client
    option comes from the PAYMENTS_KAFKA_* settings (``fetch_max_wait_ms`` overrides one,
    for benchmarks); topics are created only with PAYMENTS_KAFKA_CREATE_TOPICS, else
    ``/readyz`` names a missing one."""
    group = group or settings.projector_group
    if settings.kafka_create_topics:
        await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=True)
    async with query_runtime(settings) as runtime, open_projection(runtime, group) as projector:
        await runtime.read_model.ensure_indexes()
        consumer = ProjectorConsumer(settings, group, batch_size=batch_size, batch_wait=batch_wait,
                                     fetch_max_wait_ms=fetch_max_wait_ms)

        async def kafka_topics() -> None:  # not ready while the deployment has not created them
            await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=False)

        retention = RetentionCheck(settings)

        await consumer.start()
        try:
            async with serving("payments projector", settings.host, settings.projector_metrics_port,
                               {**ops_checks(runtime), "projection": projector.health.check,
                                "kafka_topics": kafka_topics, "events_topic_retention": retention.check}):
                log.info("projector started", extra={"fields": {"group": group, "topic": settings.events_topic}})
                stop = asyncio.Event()
                consuming = asyncio.create_task(consumer.run(projector.handle, stop))
                bumps = asyncio.create_task(_retry_bumps(projector))
                stopper = asyncio.create_task(until_stopped())
                try:
                    await asyncio.wait([consuming, stopper], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    # The batch in hand finishes (a failing one gives up instead of retrying).
                    stop.set()
                    projector.stopping = True
                    for task in (stopper, bumps):
                        task.cancel()
                    try:
                        await consuming
                    except Exception as exc:  # noqa: BLE001 - its offsets stay uncommitted: re-delivered
                        log.warning("batch in hand given up at shutdown: %r", exc)
        finally:
            await consumer.stop()
        log.info("projector stopped", extra={"fields": {"group": group}})
