"""The query worker: the registry's workflows and activities on ``payments-queries``."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from services.query.handlers import QueryHandlers
from services.query.temporal import registry
from services.query.temporal.activities import QueryActivities
from shared.settings import Settings


def build_worker(client: Client, handlers: QueryHandlers, settings: Settings, max_concurrent: int = 200) -> Worker:
    acts = QueryActivities(handlers)
    return Worker(
        client,
        task_queue=settings.query_task_queue,
        workflows=registry.WORKFLOWS,
        activities=registry.activities(acts),
        max_concurrent_activities=max_concurrent,
        max_concurrent_local_activities=max_concurrent,
        max_concurrent_workflow_tasks=max_concurrent,
    )
