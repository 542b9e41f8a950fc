"""How the projector process runs: ``run_projector`` (``payments projector``,
services/query/cli.py), the query wing's twin of services/command/processes.py.

It opens the query runtime (services/query/bootstrap.py), serves its ops endpoint
(``/healthz``, ``/readyz``, ``/metrics``: shared.ops.serving), consumes until
SIGTERM/SIGINT (shared.ops.until_stopped) and shuts down in order: the batch in hand
finishes and commits, then the consumer leaves its group. The query API is uvicorn's
(services/query/http/app.py); the query worker's is services/query/temporal/worker.py.
"""

from __future__ import annotations

import asyncio
import logging

from services.query.adapters.projector import Projector
from services.query.adapters.projector_consumer import ProjectorConsumer
from services.query.bootstrap import ops_checks, query_runtime
from shared.kafka import ensure_topics, event_topics
from shared.ops import serving, until_stopped
from shared.settings import Settings

log = logging.getLogger("payments.query.projector")

BUMP_RETRY_SECONDS = 1.0  # how often cache-epoch bumps that failed are tried again


async def _retry_bumps(projector: Projector) -> None:
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
    async with query_runtime(settings) as runtime:
        await runtime.read_model.ensure_indexes()
        consumer = ProjectorConsumer(settings, group, batch_size=batch_size, batch_wait=batch_wait,
                                     fetch_max_wait_ms=fetch_max_wait_ms)
        projector = Projector(runtime, consumer.dead_letter, group)

        async def kafka_topics() -> None:  # not ready while the deployment has not created them
            await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=False)

        await consumer.start()
        try:
            async with serving("payments projector", settings.host, settings.projector_metrics_port,
                               {**ops_checks(runtime), "projection": projector.health.check,
                                "kafka_topics": kafka_topics}):
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
