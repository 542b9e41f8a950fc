"""``payments webhooks``: a consumer group on the events topic turning each event into
its deliveries (recorded in PostgreSQL, idempotent per endpoint and event) handed to
their workflows, and the Temporal worker that runs those workflows. Offsets are
committed only once a poll's deliveries are recorded and handed over, so a SIGKILL
re-reads the batch and changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError

from services.webhooks.bootstrap import WebhookRuntime, build_worker, ops_checks, retry_window, webhook_runtime
from services.webhooks.handlers import deliveries_for
from services.webhooks.messages import AttemptOutcome
from services.webhooks.temporal.client import hand_over
from shared.consistency import ConsistencyTokens
from shared.events import InvalidEvent, PaymentEvent, parse_event
from shared.kafka import ensure_topics, event_topics, group_consumer, partition_offsets, stop_clients
from shared.ops import serving, until_stopped
from shared.settings import Settings
from shared.telemetry import WEBHOOK_BACKLOG as BACKLOG
from shared.telemetry import WEBHOOK_DELIVERIES as DELIVERIES
from shared.telemetry import WEBHOOK_OLDEST_PENDING as OLDEST_PENDING
from shared.tracing import untraced

log = logging.getLogger("payments.webhooks")
BACKLOG_REFRESH_SECONDS = 15.0
ALL_ENDPOINTS = "_all"  # the backlog's series summing every endpoint (exists with none pending)


class Fanout:
    """A poll's records -> recorded deliveries, handed to their workflows."""

    def __init__(self, runtime: WebhookRuntime) -> None:
        self.runtime = runtime
        self.tokens = ConsistencyTokens(runtime.settings.consistency_token_secret)
        self.trusted = runtime.settings.trusted_sources()
        self.retry = retry_window(runtime.settings)

    def events(self, records: Sequence[ConsumerRecord]) -> list[PaymentEvent]:
        found = []
        for record in records:
            try:
                event = parse_event(record.value)
            except InvalidEvent:
                continue  # the projector dead-letters it with its reason
            if event.source in self.trusted:
                found.append(event)
        return found

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        events = self.events(records)
        if not events:
            return
        store = self.runtime.store
        subscriptions = await store.subscriptions(sorted({e.organizationid for e in events}))
        pending = await store.add_deliveries(deliveries_for(events, subscriptions, self.tokens))
        by_endpoint: defaultdict[tuple[str, str], list] = defaultdict(list)
        for delivery, ref in pending:
            by_endpoint[(delivery.organization_id, delivery.endpoint_id)].append((delivery.payment_id, ref))
        s = self.runtime.settings
        await asyncio.gather(*(hand_over(self.runtime.temporal, s.webhooks_task_queue, self.retry, org, endpoint,
                                         items) for (org, endpoint), items in by_endpoint.items()))


async def consume(runtime: WebhookRuntime, stop: asyncio.Event) -> None:
    s = runtime.settings
    fanout = Fanout(runtime)
    consumer = group_consumer(s, s.events_topic, group_id=s.webhooks_group, enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=500)
    await consumer.start()
    try:
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=1000)
                records = [r for rs in batches.values() for r in rs]
                if not records:
                    continue
                await fanout.handle(records)
                try:
                    await consumer.commit(partition_offsets(records))
                except (CommitFailedError, IllegalStateError) as exc:
                    log.warning("offset commit refused after a rebalance: %s", exc)
            except Exception as exc:  # noqa: BLE001 - outages: the batch is re-read after a pause
                if stop.is_set():
                    raise
                log.warning("webhooks batch failed, retrying: %r", exc)
                await consumer.seek_to_committed()
                await asyncio.sleep(1.0)
    finally:
        await stop_clients(consumer)


async def refresh_backlog(runtime: WebhookRuntime) -> None:
    with untraced():
        while True:
            try:
                rows = await runtime.store.backlog()
                BACKLOG.clear()
                BACKLOG.labels(ALL_ENDPOINTS).set(sum(row["pending"] for row in rows))
                for row in rows:
                    BACKLOG.labels(row["endpoint_id"]).set(row["pending"])
                OLDEST_PENDING.set(max((float(r["oldest"]) for r in rows), default=0.0))
            except Exception as exc:  # noqa: BLE001 - a metric is not worth stopping for
                log.warning("webhook backlog not measured: %r", exc)
            await asyncio.sleep(BACKLOG_REFRESH_SECONDS)


async def run_webhooks(settings: Settings) -> None:
    for outcome in AttemptOutcome:  # every outcome's series exists from the start (rates need it)
        if outcome is not AttemptOutcome.DONE_BEFORE:
            DELIVERIES.labels(outcome.value)
    if settings.kafka_create_topics:
        await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=True)
    async with webhook_runtime(settings) as runtime, build_worker(runtime):

        async def kafka_topics() -> None:
            await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=False)

        async with serving("payments webhooks", settings.host, settings.webhooks_metrics_port,
                           {**ops_checks(runtime), "kafka_topics": kafka_topics}):
            log.info("webhooks started", extra={"fields": {"group": settings.webhooks_group}})
            stop = asyncio.Event()
            consuming = asyncio.create_task(consume(runtime, stop))
            backlog = asyncio.create_task(refresh_backlog(runtime))
            stopper = asyncio.create_task(until_stopped())
            try:
                await asyncio.wait([consuming, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.set()
                for task in (stopper, backlog):
                    task.cancel()
                try:
                    await consuming
                except Exception as exc:  # noqa: BLE001 - its offsets stay uncommitted: re-read
                    log.warning("webhooks batch given up at shutdown: %r", exc)
    log.info("webhooks stopped")
