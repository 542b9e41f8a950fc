"""The command worker: workflows and (local) activities on ``payments-commands``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from services.command.adapters.store import PaymentStore
from services.command.config import CommandSettings
from services.command.temporal.activities import CommandActivities
from services.command.temporal.workflows import WORKFLOWS

log = logging.getLogger("payments.command.worker")


def build_worker(
    client: Client, store: PaymentStore, settings: CommandSettings,
    on_outcome: Callable[[str, Any], None] | None = None,
) -> Worker:
    activities = CommandActivities(store, source=settings.event_source, on_outcome=on_outcome)
    return Worker(
        client,
        task_queue=settings.command_task_queue,
        workflows=WORKFLOWS,
        activities=activities.all(),
        # Local activities hold a pooled connection each: never more than the pool.
        max_concurrent_local_activities=settings.database_pool_size,
        max_concurrent_activities=settings.database_pool_size,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: CommandSettings) -> None:
    """``payments command-worker``: run until SIGTERM/SIGINT, serving ops on its metrics port."""
    from services.command.bootstrap import command_runtime, ops_checks
    from shared.ops import serve_ops, until_stopped

    async with command_runtime(settings, embedded_worker=True) as runtime:
        server, task = await serve_ops(
            "payments command worker", settings.host, settings.command_worker_metrics_port, ops_checks(runtime)
        )
        log.info("command worker polling %s", settings.command_task_queue,
                 extra={"fields": {"ops_port": settings.command_worker_metrics_port}})
        try:
            await until_stopped()
        finally:
            log.info("command worker stopping")
            server.should_exit = True
            await task
