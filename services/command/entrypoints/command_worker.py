"""``payments command-worker``: the command workflows and activities on their task queue,
with the ops endpoint, until SIGTERM."""

from __future__ import annotations

import logging

from services.command.bootstrap import command_runtime, ops_checks
from services.command.config import CommandSettings
from shared.ops import serving, until_stopped

log = logging.getLogger("payments.command.worker")


async def run_worker(settings: CommandSettings) -> None:
    """Workflows and activities on the command task queue (the worker the runtime hosts)."""
    async with (
        command_runtime(settings, embedded_worker=True) as runtime,
        serving("payments command worker", settings.host, settings.command_worker_metrics_port,
                ops_checks(runtime)),
    ):
        log.info("command worker polling %s", settings.command_task_queue,
                 extra={"fields": {"ops_port": settings.command_worker_metrics_port}})
        try:
            await until_stopped()
        finally:
            log.info("command worker stopping")
