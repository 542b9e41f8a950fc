"""The command worker: the registry's workflows and activities on ``payments-commands``
(its own process, entrypoints/command_worker.py, or hosted by the API and the intake)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from services.command.adapters.store import PaymentStore
from services.command.config import CommandSettings
from services.command.temporal import registry
from services.command.temporal.activities import CommandActivities


def build_worker(
    client: Client, store: PaymentStore, settings: CommandSettings,
    hand_over: Callable[[str, Any], None] | None = None,
) -> Worker:
    activities = CommandActivities(store, source=settings.event_source, hand_over=hand_over)
    return Worker(
        client,
        task_queue=settings.command_task_queue,
        workflows=registry.WORKFLOWS,
        activities=registry.activities(activities),
        # Local activities hold a pooled connection each: never more than the pool.
        max_concurrent_local_activities=settings.database_pool_size,
        max_concurrent_activities=settings.database_pool_size,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )

