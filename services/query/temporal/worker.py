"""The query worker: ``PaymentQueryWorkflow`` and its activities on ``payments-queries``."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from services.query.handlers import QueryHandlers
from services.query.temporal.activities import QueryActivities
from services.query.temporal.workflows import PaymentQueryWorkflow
from shared.settings import Settings


def build_worker(client: Client, handlers: QueryHandlers, settings: Settings, max_concurrent: int = 200) -> Worker:
    acts = QueryActivities(handlers)
    return Worker(
        client,
        task_queue=settings.query_task_queue,
        workflows=[PaymentQueryWorkflow],
        activities=[acts.search, acts.get, acts.statistics],
        max_concurrent_activities=max_concurrent,
        max_concurrent_local_activities=max_concurrent,
        max_concurrent_workflow_tasks=max_concurrent,
    )
