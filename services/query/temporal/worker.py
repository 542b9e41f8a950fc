"""The query worker: ``PaymentQueryWorkflow`` and its activities on ``payments-queries``."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.worker import Worker

from services.query.bootstrap import QueryRuntime, ops_checks, query_runtime
from services.query.temporal.activities import QueryActivities
from services.query.temporal.workflows import PaymentQueryWorkflow
from shared.ops import serving, until_stopped
from shared.settings import Settings
from shared.temporal import connect

log = logging.getLogger("payments.query.worker")


def create_worker(client: Client, runtime: QueryRuntime, settings: Settings, max_concurrent: int = 200) -> Worker:
    acts = QueryActivities(runtime.handlers)
    return Worker(
        client,
        task_queue=settings.query_task_queue,
        workflows=[PaymentQueryWorkflow],
        activities=[acts.search, acts.get, acts.statistics],
        max_concurrent_activities=max_concurrent,
        max_concurrent_local_activities=max_concurrent,
        max_concurrent_workflow_tasks=max_concurrent,
    )


async def run_query_worker(settings: Settings, max_concurrent: int = 200) -> None:
    """Serve the query task queue (and the ops endpoint) until SIGTERM/SIGINT."""
    async with query_runtime(settings) as runtime:
        client = await connect(settings)

        async def temporal() -> None:
            await client.service_client.check_health()

        checks = {**ops_checks(runtime), "temporal": temporal}
        async with serving("payments query worker", settings.host, settings.query_worker_metrics_port, checks), \
                create_worker(client, runtime, settings, max_concurrent):
            log.info("query worker started", extra={"fields": {"task_queue": settings.query_task_queue}})
            await until_stopped()
            log.info("query worker stopping")
