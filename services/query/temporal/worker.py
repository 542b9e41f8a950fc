"""The query worker: ``PaymentQueryWorkflow`` and its activities on ``payments-queries``."""

from __future__ import annotations

import asyncio
import logging
import signal

from temporalio.worker import Worker

from services.query.bootstrap import QueryContext, build
from services.query.temporal.activities import QueryActivities
from services.query.temporal.workflows import PaymentQueryWorkflow
from shared.ops import serve_ops
from shared.settings import Settings
from shared.temporal import connect

log = logging.getLogger("payments.query.worker")


def create_worker(client, ctx: QueryContext, settings: Settings, max_concurrent: int = 200) -> Worker:  # type: ignore[no-untyped-def]
    acts = QueryActivities(ctx.handlers)
    return Worker(
        client,
        task_queue=settings.query_task_queue,
        workflows=[PaymentQueryWorkflow],
        activities=[acts.search, acts.get, acts.statistics],
        max_concurrent_activities=max_concurrent,
        max_concurrent_local_activities=max_concurrent,
        max_concurrent_workflow_tasks=max_concurrent,
    )


async def main(settings: Settings, max_concurrent: int = 200) -> None:
    ctx = build(settings)
    client = await connect(settings)
    worker = create_worker(client, ctx, settings, max_concurrent)

    async def temporal_ready() -> None:
        await client.service_client.check_health()

    server, ops_task = await serve_ops("payments query worker", settings.host, settings.query_worker_metrics_port,
                                       {"mongodb": ctx.check_mongo, "redis": ctx.check_redis,
                                        "temporal": temporal_ready})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("query worker started", extra={"fields": {"task_queue": settings.query_task_queue}})
    async with worker:
        await stop.wait()
        log.info("query worker stopping")
    server.should_exit = True
    await ops_task
    await ctx.close()
