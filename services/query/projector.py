"""The projector: a faust-streaming agent that projects payment events into MongoDB.

Consumer group ``payments-projector`` on the events topic. Per batch (up to
``batch_size`` events or ``batch_wait`` seconds):

1. parse every message against the event contract; invalid ones go to the dead-letter
   topic (original bytes as value, the reason and the origin in headers);
2. apply the valid ones with :func:`projection.apply_batch` (one MongoDB transaction),
   retrying transient MongoDB errors until it succeeds or the process stops;
3. bump the Redis cache generation of every organization that changed;
4. only then ack the batch, so faust commits offsets only after the read model write
   (``noack_take`` + manual ``ack``: an exception or a SIGKILL mid-batch leaves the
   offsets uncommitted and the batch is projected again, harmlessly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from pymongo.errors import PyMongoError

from services.query import projection
from services.query.bootstrap import QueryContext, build
from shared.events import EventType, InvalidEvent, PaymentEvent, parse_event
from shared.kafka import ensure_topics, topic_specs
from shared.ops import serve_ops
from shared.settings import Settings
from shared.telemetry import PROJECTION_EVENTS, PROJECTION_LAG, bind_log_context, log_context

log = logging.getLogger("payments.query.projector")

PROJECTOR_GROUP = "payments-projector"
KNOWN_TYPES = {t.value: t.short for t in EventType}


def type_label(raw: bytes | None, event: PaymentEvent | None = None) -> str:
    """Metric label: the short event type, or ``unknown`` (bounded cardinality)."""
    if event is not None:
        return event.type.short
    try:
        value = json.loads(raw or b"").get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unknown"
    return KNOWN_TYPES.get(value, "unknown") if isinstance(value, str) else "unknown"


def dlq_headers(reason: str, topic: str, partition: int, offset: int, group: str,
                original: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
    headers = [(k, v) for k, v in original if not k.startswith("dlq-")]
    headers += [
        ("dlq-reason", reason.encode()[:2000]),
        ("dlq-source-topic", topic.encode()),
        ("dlq-source-partition", str(partition).encode()),
        ("dlq-source-offset", str(offset).encode()),
        ("dlq-consumer-group", group.encode()),
        ("dlq-time", datetime.now(UTC).isoformat().encode()),
    ]
    return headers


class Projector:
    """Batch handler shared by the faust agent (and usable without faust)."""

    def __init__(self, ctx: QueryContext, dead_letter: Any, group: str) -> None:
        self.ctx = ctx
        self.dead_letter = dead_letter  # async (key, value, headers) -> None
        self.group = group
        self.pending_bumps: set[str] = set()
        self.stopping = False
        self._recovered = False
        self._sessions: set[bytes] = set()

    @property
    def _sessions_doc(self) -> dict[str, str]:
        return {"_id": f"projector-sessions:{self.group}"}

    async def recover(self) -> None:
        """Abort transactions left open by a killed predecessor of this consumer group.

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
        self._recovered = True

    async def _record_session(self, session: Any) -> None:
        lsid = session.session_id
        key = bytes(lsid["id"])
        if key not in self._sessions:
            await self.ctx.read_model.db["read_model_meta"].update_one(
                self._sessions_doc, {"$addToSet": {"lsids": lsid}}, upsert=True)
            self._sessions.add(key)

    async def handle(self, messages: Sequence[Any]) -> None:
        """``messages``: faust ``Message`` objects (topic, partition, offset, key, value, headers)."""
        valid: list[PaymentEvent] = []
        for msg in messages:
            try:
                valid.append(parse_event(msg.value))
            except InvalidEvent as exc:
                await self._reject(msg, exc.reason)
        if valid:
            result = await self._apply(valid)
            for event, outcome in zip(valid, result.outcomes, strict=True):
                PROJECTION_EVENTS.labels(event.type.short, outcome).inc()
                log.info("event %s", outcome, extra={"fields": {"event_id": event.id, "payment_id": event.subject,
                                                                  "version": event.paymentversion}})
            lag = projection.lag_seconds(result.newest_event_time)
            if lag is not None:
                PROJECTION_LAG.set(lag)
            self.pending_bumps |= result.organizations
            log.info("projected batch", extra={"fields": {
                "events": len(valid), "applied": result.outcomes.count(projection.APPLIED),
                "first_event_id": valid[0].id, "last_event_id": valid[-1].id}})
        await self.flush_bumps()

    async def _apply(self, events: list[PaymentEvent]) -> projection.BatchResult:
        delay = 0.05
        while True:
            try:
                if not self._recovered:
                    await self.recover()
                cols = await self.ctx.read_model.active(fresh=True)
                return await projection.apply_batch(self.ctx.mongo, cols, events, self._record_session)
            except PyMongoError as exc:
                if self.stopping:
                    raise
                log.warning("read model write failed, retrying", extra={"fields": {
                    "error": repr(exc)[:300], "retry_in": delay, "first_event_id": events[0].id}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _reject(self, msg: Any, reason: str) -> None:
        label = type_label(msg.value)
        PROJECTION_EVENTS.labels(label, projection.INVALID).inc()
        headers = dlq_headers(reason, msg.topic, msg.partition, msg.offset, self.group,
                              list(msg.headers or []))
        await self.dead_letter(msg.key, msg.value, headers)
        token = bind_log_context(event_id=_event_id(msg.value))
        try:
            log.warning("invalid event sent to the dead-letter topic", extra={"fields": {
                "reason": reason[:500], "partition": msg.partition, "offset": msg.offset}})
        finally:
            log_context.reset(token)

    async def flush_bumps(self) -> None:
        if not self.pending_bumps:
            return
        try:
            await self.ctx.cache.bump(self.pending_bumps)
            self.pending_bumps.clear()
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
        await ensure_topics(settings.kafka_bootstrap, topic_specs(settings), create=False)

    @app.task
    async def startup() -> None:
        await ctx.read_model.ensure_indexes()
        if ops:
            await serve_ops("payments projector", settings.host, settings.projector_metrics_port,
                            {"mongodb": ctx.check_mongo, "redis": ctx.check_redis, "kafka_topics": check_topics})
        log.info("projector started", extra={"fields": {"group": group, "topic": settings.events_topic}})

    @app.timer(1.0)
    async def retry_bumps() -> None:
        await projector.flush_bumps()

    return app


def run(settings: Settings, **kwargs: Any) -> None:
    """Run the projector until SIGTERM/SIGINT (faust's worker stops it gracefully)."""
    from faust.worker import Worker

    if settings.kafka_create_topics:  # before faust subscribes, so that it sees them
        asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings), create=True))
    app = create_app(settings, **kwargs)
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True, override_logging=False,
                    redirect_stdouts=False)

    def _stopping(*_: Any) -> None:
        app.projector.stopping = True  # type: ignore[attr-defined]

    worker.on_worker_shutdown = _stopping  # type: ignore[method-assign]
    worker.execute_from_commandline()
