"""``payments replay``: rebuild the read model (payments, statistics, history) into a new
generation while queries keep reading the current one, switch the pointer atomically,
catch up with what the live projector wrote meanwhile, then drop the old generation. It
applies events with the projection's own writes. From the events topic (default), it reads
partitions by assignment (no consumer group: the projector's offsets stay); ``--from
postgres`` reads PostgreSQL's event log instead (adapters/event_log.py), which keeps every
event whatever the topic's retention. Steps: docs/query-service.md, "Replay".
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.query import poison
from services.query.adapters import mongo_errors
from services.query.adapters.batch_writes import AppliedBatch, apply_batch
from services.query.adapters.event_log import EventLog
from services.query.adapters.read_model import Collections, MongoReadModel
from services.query.bootstrap import query_runtime
from services.query.domain import Outcome
from shared.events import InvalidEvent, PaymentEvent, parse_event
from shared.kafka import topic_partitions
from shared.settings import Settings

log = logging.getLogger("payments.query.replay")
TRANSIENT_ATTEMPTS = 30  # with backoff capped at 5 s: about two minutes of a failing MongoDB


class _Progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int, source: str = "kafka") -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(f"[bold]replay from {source}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} ev/s"), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task("replay", total=total or None, rate="-")
        self.started = time.monotonic()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            rate = f"{self.done / max(time.monotonic() - self.started, 1e-6):,.0f}"
            self.bar.update(self.task, advance=n, rate=rate)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float = 10.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        parts = await topic_partitions(consumer, topic)
        if parts:
            return parts
        if time.monotonic() > deadline:
            return []
        await asyncio.sleep(0.2)


async def _apply(mongo: Any, cols: Collections, values: list[bytes | None], counts: dict[str, int]) -> None:
    """Apply one batch of CloudEvents with the projection's writes, counting the outcomes."""
    events = []
    for value in values:
        try:
            events.append(parse_event(value))
        except InvalidEvent:
            counts[Outcome.INVALID] += 1

    async def apply(items: list[PaymentEvent], dry_run: bool) -> AppliedBatch:
        return await apply_batch(mongo, cols, items, dry_run=dry_run)

    async def skip(event: PaymentEvent, error: BaseException) -> None:
        # the live projector dead-lettered it; a rebuild must not stop on it either
        counts[Outcome.DEAD_LETTERED] += 1
        log.warning("event the read model refuses, skipped", extra={"fields": {
            "event_id": event.id, "reason": poison.describe(mongo_errors.refusal(error), error)[:300]}})

    # After the switch the live projector writes the same generation: a write conflict (or a
    # failover) is retried with the projector's backoff, never the end of the rebuild.
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            _, result = await poison.apply_without_poison(events, apply, skip, mongo_errors.is_transient)
            break
        except Exception as exc:
            if attempt == TRANSIENT_ATTEMPTS or not mongo_errors.is_transient(exc):
                raise
            log.info("transient MongoDB error, batch retried", extra={"fields": {
                "attempt": attempt, "error": str(exc)[:200]}})
            await asyncio.sleep(poison.backoff(attempt))
    for outcome in result.outcomes if result is not None else ():
        counts[outcome] += 1


async def _consume(consumer: AIOKafkaConsumer, mongo: Any, cols: Collections, ends: dict[TopicPartition, int],
                   idle: float | None, batch_size: int, progress: _Progress, counts: dict[str, int]) -> None:
    """Apply records until every partition reached ``ends``, or (with ``idle``) ``idle`` s pass empty."""
    last_data = time.monotonic()
    while True:
        records = await consumer.getmany(timeout_ms=200, max_records=batch_size)
        messages = [m for batch in records.values() for m in batch]
        if messages:
            last_data = time.monotonic()
            await _apply(mongo, cols, [m.value for m in messages], counts)
            progress.advance(len(messages))
        reached = all([await consumer.position(tp) >= end for tp, end in ends.items()])
        if reached or (idle is not None and time.monotonic() - last_data >= idle):
            return


# One pass of a rebuild: apply events into these collections, advancing the bar and counts.
Pass = Callable[[Collections, "_Progress", dict[str, int]], Awaitable[None]]


@asynccontextmanager
async def _from_kafka(settings: Settings, mongo: Any, idle: float | None,
                      batch_size: int) -> AsyncIterator[tuple[int, Pass, Pass]]:
    """The topic from offset 0 to the end offsets seen now; the catch-up: to those of the switch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await _partitions(consumer, settings.events_topic)
        consumer.assign(tps)
        if tps:
            await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps) if tps else {}
        begins = await consumer.beginning_offsets(tps) if tps else {}

        async def first(cols: Collections, bar: _Progress, counts: dict[str, int]) -> None:
            if tps:
                await _consume(consumer, mongo, cols, ends, idle, batch_size, bar, counts)

        async def catch_up(cols: Collections, bar: _Progress, counts: dict[str, int]) -> None:
            if tps:
                await _consume(consumer, mongo, cols, await consumer.end_offsets(tps), idle, batch_size, bar, counts)

        yield sum(ends[tp] - begins[tp] for tp in tps), first, catch_up
    finally:
        await consumer.stop()


@asynccontextmanager
async def _from_postgres(settings: Settings, mongo: Any, batch_size: int) -> AsyncIterator[tuple[int, Pass, Pass]]:
    """One snapshot of PostgreSQL's log, streamed; the catch-up: what it could not see."""
    event_log = EventLog(settings.database_url)
    async with event_log.snapshot() as snapshot:
        async def apply_all(batches: AsyncIterator[list[bytes]], cols: Collections, bar: _Progress,
                            counts: dict[str, int]) -> None:
            async for batch in batches:
                await _apply(mongo, cols, list(batch), counts)
                bar.advance(len(batch))

        async def first(cols: Collections, bar: _Progress, counts: dict[str, int]) -> None:
            await apply_all(snapshot.batches(batch_size), cols, bar, counts)

        async def catch_up(cols: Collections, bar: _Progress, counts: dict[str, int]) -> None:
            await apply_all(event_log.since(snapshot.started, batch_size), cols, bar, counts)

        yield snapshot.total, first, catch_up


async def run_replay(settings: Settings, *, source: str = "kafka", idle: float | None = None, batch_size: int = 1000,
                     keep_old: bool = False, progress: bool = True) -> str:
    """Rebuild the read model into a new generation from ``source`` (``kafka`` or
    ``postgres``; module docstring); returns a summary."""
    async with query_runtime(settings) as runtime:
        rm: MongoReadModel = runtime.read_model
        old = await rm.active_generation()
        new = f"r{int(time.time())}{uuid.uuid4().hex[:6]}"
        cols = rm.collections(new)
        counts = dict.fromkeys(Outcome, 0)
        opened = (_from_postgres(settings, runtime.mongo, batch_size) if source == "postgres"
                  else _from_kafka(settings, runtime.mongo, idle, batch_size))
        async with opened as (total, first, catch_up):
            await rm.ensure_indexes(cols)  # once the source is open: no empty generation left by an unreachable one
            bar = _Progress(progress, total, source)
            try:
                started = time.monotonic()
                await first(cols, bar, counts)
                await rm.activate(new)
                switched = time.monotonic()
                log.info("read model switched", extra={"fields": {"from": old, "to": new, "source": source}})
                # what the live projector wrote to the old generation meanwhile
                await catch_up(cols, bar, counts)
            finally:
                bar.stop()
        if not keep_old and old != new:
            await asyncio.sleep(max(0.0, 2 * MongoReadModel.POINTER_TTL - (time.monotonic() - switched)))
            await rm.drop(old)
    elapsed = time.monotonic() - started
    return (f"replayed {sum(counts.values())} events from {source} in {elapsed:.1f}s into generation {new} "
            f"(applied {counts['applied']}, duplicate {counts['duplicate']}, invalid {counts['invalid']}, "
            f"refused {counts['dead_lettered']}); "
            f"previous generation {old} {'kept' if keep_old else 'dropped'}")
