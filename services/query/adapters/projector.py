"""The projector: a faust-streaming agent that projects payment events into MongoDB.

Consumer group ``payments-projector`` on the events topic. Per batch (up to
``batch_size`` events or ``batch_wait`` seconds):

1. parse every message against the event contract; invalid ones go to the dead-letter
   topic (original bytes as value, the reason and the origin in headers);
2. apply the valid ones with :func:`domain.apply_batch` (one MongoDB transaction),
   retrying transient MongoDB errors with backoff and jitter; an event the read model
   refuses (or that makes our code fail) is found by :mod:`poison`, dead-lettered, and
   the batch applied without it;
3. bump the Redis cache generation of every organization that changed (recorded in the
   batch's transaction until Redis took it, so a crash cannot lose a bump);
4. only then ack the batch, so faust commits offsets only after the read model write
   (``noack_take`` + manual ``ack``: an exception or a SIGKILL mid-batch leaves the
   offsets uncommitted and the batch is projected again, harmlessly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.query import domain
from services.query.adapters import poison
from services.query.bootstrap import QueryContext, build
from shared.dlq import dlq_headers
from shared.events import EventType, InvalidEvent, PaymentEvent, parse_event
from shared.kafka import ensure_topics, event_topics
from shared.ops import serve_ops
from shared.settings import Settings
from shared.telemetry import (
    PROJECTION_DEAD_LETTERS,
    PROJECTION_EVENTS,
    PROJECTION_LAG,
    PROJECTOR_CONSECUTIVE_FAILURES,
    PROJECTOR_STALLED,
    bind_log_context,
    log_context,
)

log = logging.getLogger("payments.query.projector")

PROJECTOR_GROUP = "payments-projector"
KNOWN_TYPES = {t.value: t.short for t in EventType}
for _reason in poison.REASONS:  # every series exists from the start: increase() alerts see the first one
    PROJECTION_DEAD_LETTERS.labels(_reason)
UNTRUSTED_SOURCE = "untrusted source"


def type_label(raw: bytes | None, event: PaymentEvent | None = None) -> str:
    """Metric label: the short event type, or ``unknown`` (bounded cardinality)."""
    if event is not None:
        return event.type.short
    try:
        value = json.loads(raw or b"").get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unknown"
    return KNOWN_TYPES.get(value, "unknown") if isinstance(value, str) else "unknown"


class Projector:
    """Batch handler shared by the faust agent (and usable without faust).

    :meth:`handle` returns only when every message of the batch is applied or
    dead-lettered: a poison event is isolated (:mod:`poison`), transient failures are
    retried with backoff and jitter, and any other failure is retried too while
    ``/readyz`` (:meth:`check_progress`) and the metrics say the projector is stalled.
    It never raises, except while the process stops, so the consuming loop never dies.
    """

    stall_after = 10.0  # seconds of consecutive failures before /readyz says "stalled"

    def __init__(self, ctx: QueryContext, dead_letter: Any, group: str) -> None:
        self.ctx = ctx
        self.dead_letter = dead_letter  # async (key, value, headers) -> None
        self.group = group
        self.pending_bumps: set[str] = set()
        self.pending = domain.PendingBumps(ctx.read_model.db["read_model_meta"], group, uuid.uuid4().hex)
        self.stopping = False
        self._recovered = False
        self._sessions: set[bytes] = set()
        self._bumps_lock = asyncio.Lock()
        self._failures = 0
        self._failing_since: float | None = None
        self._last_error = ""
        self.trusted_sources = ctx.settings.trusted_sources()

    @property
    def _sessions_doc(self) -> dict[str, str]:
        return {"_id": f"projector-sessions:{self.group}"}

    async def recover(self) -> None:
        """Abort transactions left open by a killed predecessor of this consumer group,
        and take over the cache bumps it had not flushed.

        A SIGKILLed projector leaves its transaction open; MongoDB holds its locks (write
        conflicts) until ``transactionLifetimeLimitSeconds`` (60 s) reaps it. Every
        projector records the ids of the sessions it runs transactions on, and a starting
        one kills the recorded sessions. Cost: a live sibling replica's in-flight batch
        is aborted once, and retried.
        """
        doc = await self.ctx.read_model.db["read_model_meta"].find_one(self._sessions_doc)
        if doc and doc.get("lsids"):
            await self.ctx.mongo.admin.command("killSessions", doc["lsids"])
            await self.ctx.read_model.db["read_model_meta"].update_one(self._sessions_doc, {"$set": {"lsids": []}})
            log.info("aborted transactions of previous projector sessions", extra={"fields": {
                "sessions": len(doc["lsids"])}})
        unflushed = await self.pending.adopt()
        if unflushed:
            log.info("cache bumps left by a previous projector", extra={"fields": {"organizations": len(unflushed)}})
        self.pending_bumps |= unflushed
        self._recovered = True

    async def _record_session(self, session: Any) -> None:
        lsid = session.session_id
        key = bytes(lsid["id"])
        if key not in self._sessions:
            await self.ctx.read_model.db["read_model_meta"].update_one(
                self._sessions_doc, {"$addToSet": {"lsids": lsid}}, upsert=True)
            self._sessions.add(key)

    # ----------------------------------------------------------------- one batch

    async def handle(self, messages: Sequence[Any]) -> None:
        """``messages``: faust ``Message`` objects (topic, partition, offset, key, value, headers)."""
        settled: set[tuple[int, int]] = set()  # dead-lettered already: not again on a retry
        attempt = 0
        while True:
            try:
                await self._handle(messages, settled)
                self._progressed()
                return
            except Exception as exc:
                if self.stopping:
                    raise
                attempt += 1
                self._struggling(exc, attempt, messages[0] if messages else None)
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

        async def apply(items: list[tuple[Any, PaymentEvent]], dry_run: bool) -> domain.BatchResult:
            return await self._apply([e for _, e in items], dry_run=dry_run)

        async def dead_letter(item: tuple[Any, PaymentEvent], error: BaseException) -> None:
            msg, event = item
            await self._reject(msg, poison.describe(error), poison.reason_class(error), event)
            settled.add((msg.partition, msg.offset))

        valid, result = await poison.apply_without_poison(valid, apply, dead_letter)
        if result is not None:
            events = [e for _, e in valid]
            for event, outcome in zip(events, result.outcomes, strict=True):
                PROJECTION_EVENTS.labels(event.type.short, outcome).inc()
                log.info("event %s", outcome, extra={"fields": {"event_id": event.id, "payment_id": event.subject,
                                                                  "version": event.paymentversion}})
            lag = domain.lag_seconds(result.newest_event_time)
            if lag is not None:
                PROJECTION_LAG.set(lag)
            async with self._bumps_lock:
                self.pending_bumps |= result.organizations
            log.info("projected batch", extra={"fields": {
                "events": len(events), "applied": result.outcomes.count(domain.APPLIED),
                "first_event_id": events[0].id, "last_event_id": events[-1].id}})
        await self.flush_bumps()

    def _parse(self, raw: bytes | None) -> PaymentEvent:
        """The contract, then the trust boundary: only the command service (and sources
        trusted on purpose) may write the read model; others send commands to the intake."""
        event = parse_event(raw)
        if event.source not in self.trusted_sources:
            raise InvalidEvent(UNTRUSTED_SOURCE)
        return event

    async def _apply(self, events: list[PaymentEvent], *, dry_run: bool = False) -> domain.BatchResult:
        """Apply (or try) ``events``, retrying transient MongoDB errors; raises any other."""
        attempt = 0
        while True:
            try:
                # Not the events' fault if this fails: retried, never a reason to dead-letter.
                if not self._recovered:
                    await self.recover()
                cols = await self.ctx.read_model.active(fresh=True)
            except Exception as exc:
                if self.stopping:
                    raise
                attempt += 1
                self._struggling(exc, attempt, None)
                await asyncio.sleep(poison.backoff(attempt))
                continue
            try:
                return await domain.apply_batch(self.ctx.mongo, cols, events, self._record_session,
                                                    pending=self.pending, dry_run=dry_run)
            except Exception as exc:
                if self.stopping or not poison.is_transient(exc):
                    raise
                attempt += 1
                self._struggling(exc, attempt, None)
                await asyncio.sleep(poison.backoff(attempt))

    async def _reject(self, msg: Any, reason: str, kind: str, event: PaymentEvent | None = None) -> None:
        label = type_label(msg.value, event)
        result = domain.INVALID if kind == poison.INVALID else domain.DEAD_LETTERED
        PROJECTION_EVENTS.labels(label, result).inc()
        headers = dlq_headers(reason, msg.topic, msg.partition, msg.offset, self.group,
                              list(msg.headers or []), kind=kind)
        await self.dead_letter(msg.key, msg.value, headers)
        PROJECTION_DEAD_LETTERS.labels(kind).inc()
        token = bind_log_context(event_id=event.id if event else _event_id(msg.value))
        try:
            log.warning("event sent to the dead-letter topic", extra={"fields": {
                "kind": kind, "reason": reason[:500], "partition": msg.partition, "offset": msg.offset}})
        finally:
            log_context.reset(token)

    # ----------------------------------------------------------------- progress

    def _struggling(self, exc: BaseException, attempt: int, first: Any) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        PROJECTOR_CONSECUTIVE_FAILURES.set(self._failures)
        PROJECTOR_STALLED.set(1 if now - self._failing_since >= self.stall_after else 0)
        where = {"partition": first.partition, "offset": first.offset} if first is not None else {}
        log.warning("projection failed, retrying", exc_info=not poison.is_transient(exc), extra={"fields": {
            "error": self._last_error, "attempt": attempt, "consecutive_failures": self._failures, **where}})

    def _progressed(self) -> None:
        if self._failures:
            log.info("projection progressing again", extra={"fields": {"after_failures": self._failures}})
        self._failures, self._failing_since, self._last_error = 0, None, ""
        PROJECTOR_CONSECUTIVE_FAILURES.set(0)
        PROJECTOR_STALLED.set(0)

    async def check_progress(self) -> None:
        """Readiness check: raises while the projector has failed for ``stall_after`` seconds."""
        if self._failing_since is None:
            return
        failing_for = time.monotonic() - self._failing_since
        if failing_for >= self.stall_after:
            PROJECTOR_STALLED.set(1)
            raise RuntimeError(f"projection stalled for {failing_for:.0f}s after {self._failures} consecutive "
                               f"failures; last: {self._last_error}")

    # ----------------------------------------------------------------- cache

    async def flush_bumps(self) -> None:
        """Bump the cache generations of the changed organizations, then forget them
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
                await self.ctx.cache.bump(orgs)
                await self.pending.remove(orgs)
                self.pending_bumps -= orgs
            except Exception as exc:  # noqa: BLE001 - retried with the next batch or tick
                log.warning("cache generation bump failed; will retry", extra={"fields": {"error": repr(exc)[:200]}})


def _event_id(raw: bytes | None) -> str | None:
    try:
        value = json.loads(raw or b"").get("id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) else None


# faust hard-codes the consumer's fetch_max_wait_ms to 1500; we set it from
# PAYMENTS_KAFKA_FETCH_MAX_WAIT_MS (Kafka's own default, 500 ms). On a broker that answers
# a waiting fetch when records arrive (Kafka, noida-db) it does not bound latency; on
# Tansu it does (measured: 700 ms from produce to agent), so the local stack on Tansu
# sets 25 ms. docs/benchmarks.md has the same-run figures.
DEFAULT_FETCH_MAX_WAIT_MS = Settings.model_fields["kafka_fetch_max_wait_ms"].default


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms = DEFAULT_FETCH_MAX_WAIT_MS

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        thread = _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return thread


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    fetch_max_wait_ms = DEFAULT_FETCH_MAX_WAIT_MS

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings, *, group: str = PROJECTOR_GROUP, batch_size: int = 500,
               batch_wait: float = 0.005, ops: bool = True,
               fetch_max_wait_ms: int | None = None) -> faust.App:
    """The faust app with the projection agent; run it with :func:`run`. Every Kafka
    client option comes from the PAYMENTS_KAFKA_* settings (``fetch_max_wait_ms``
    overrides one, for benchmarks); faust never declares topics (``run`` creates them
    only with PAYMENTS_KAFKA_CREATE_TOPICS)."""
    datadir = settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = _App(
        group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        web_enabled=False,
        store="memory://",
        datadir=str(datadir),
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_seconds,
        broker_commit_interval=settings.kafka_commit_interval_seconds,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,
        producer_acks=-1 if settings.kafka_producer_acks == "all" else int(settings.kafka_producer_acks),
        producer_linger=settings.kafka_producer_linger_ms / 1000,
    )
    app.fetch_max_wait_ms = fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms
    events_topic = app.topic(settings.events_topic, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    ctx = build(settings)

    async def dead_letter(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        fut = await dlq_topic.send(key=key, value=value if value is not None else b"", headers=headers)
        await fut  # the DLQ record is written before the original's offset is committed

    projector = Projector(ctx, dead_letter, group)
    app.projector = projector  # type: ignore[attr-defined]

    @app.agent(events_topic, name="project")
    async def project(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(batch_size, within=batch_wait):
            await projector.handle([e.message for e in events])
            for event in events:
                await stream.ack(event)

    async def check_topics() -> None:  # not ready while the deployment has not created them
        await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=False)

    @app.task
    async def startup() -> None:
        await ctx.read_model.ensure_indexes()
        if ops:
            await serve_ops("payments projector", settings.host, settings.projector_metrics_port,
                            {"mongodb": ctx.check_mongo, "redis": ctx.check_redis,
                             "projection": projector.check_progress, "kafka_topics": check_topics})
        log.info("projector started", extra={"fields": {"group": group, "topic": settings.events_topic}})

    @app.timer(1.0)
    async def retry_bumps() -> None:
        await projector.flush_bumps()

    return app


def run(settings: Settings, **kwargs: Any) -> None:
    """Run the projector until SIGTERM/SIGINT (faust's worker stops it gracefully)."""
    from faust.worker import Worker

    if settings.kafka_create_topics:  # before faust subscribes, so that it sees them
        asyncio.run(ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=True))
    app = create_app(settings, **kwargs)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False,
                    redirect_stdouts=False)

    def _stopping(*_: Any) -> None:
        app.projector.stopping = True  # type: ignore[attr-defined]

    worker.on_worker_shutdown = _stopping  # type: ignore[method-assign]
    worker.execute_from_commandline()
