"""``payments query-worker``: the query workflows and their activities on the query task
queue, with the ops endpoint, until SIGTERM."""

from __future__ import annotations

import logging

from services.query.bootstrap import ops_checks, query_runtime
from services.query.temporal.worker import build_worker
from shared.ops import serving, until_stopped
from shared.settings import Settings
from shared.temporal import connect

log = logging.getLogger("payments.query.worker")


async def run_query_worker(settings: Settings, max_concurrent: int = 200) -> None:
    """Serve the query task queue (and the ops endpoint) until SIGTERM/SIGINT."""
    async with query_runtime(settings) as runtime:
        client = await connect(settings)

        async def temporal() -> None:
            await client.service_client.check_health()

        checks = {**ops_checks(runtime), "temporal": temporal}
        async with serving("payments query worker", settings.host, settings.query_worker_metrics_port, checks), \
                build_worker(client, runtime.handlers, settings, max_concurrent):
            log.info("query worker started", extra={"fields": {"task_queue": settings.query_task_queue}})
            await until_stopped()
            log.info("query worker stopping")
