"""The webhooks wing's composition root: the PostgreSQL pool (migrated with the command
service's migrations, whose database it shares), the store, the secret box, the sender
and the Temporal client; and the worker of the delivery workflows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from services.command.adapters.store import create_pool, migrate
from services.webhooks.adapters.secret_box import SecretBox
from services.webhooks.adapters.sender import Sender
from services.webhooks.adapters.store import WebhookStore
from services.webhooks.messages import RetryWindow
from services.webhooks.temporal.activities import WebhookActivities
from services.webhooks.temporal.workflows import WebhookDeliveries
from shared.http import ReadinessCheck
from shared.settings import Settings
from shared.temporal import connect


@dataclass
class WebhookRuntime:
    settings: Settings
    pool: asyncpg.Pool
    store: WebhookStore
    box: SecretBox
    sender: Sender
    temporal: Client


def retry_window(settings: Settings) -> RetryWindow:
    return RetryWindow(base_seconds=settings.webhooks_retry_base_seconds,
                       cap_seconds=settings.webhooks_retry_cap_seconds,
                       max_retry_seconds=settings.webhooks_max_retry_seconds,
                       attempt_timeout_seconds=settings.webhooks_connect_timeout_seconds
                       + 2 * settings.webhooks_timeout_seconds + 30)


def sender(settings: Settings) -> Sender:
    return Sender(connect_timeout=settings.webhooks_connect_timeout_seconds,
                  timeout=settings.webhooks_timeout_seconds,
                  response_cap=settings.webhooks_response_cap_bytes,
                  allow_private=settings.webhooks_allow_private)


@contextlib.asynccontextmanager
async def webhook_runtime(settings: Settings, *, pool_size: int = 10) -> AsyncIterator[WebhookRuntime]:
    pool = await create_pool(settings.database_url, size=pool_size)
    out = sender(settings)
    try:
        await migrate(pool)
        temporal = await connect(settings)
        yield WebhookRuntime(settings, pool, WebhookStore(pool), SecretBox(settings.webhooks_secret_key), out,
                             temporal)
    finally:
        await out.close()
        await pool.close()


def build_worker(runtime: WebhookRuntime) -> Worker:
    s = runtime.settings
    activities = WebhookActivities(runtime.store, runtime.box, runtime.sender,
                                   max_in_flight_per_org=s.webhooks_max_in_flight_per_org,
                                   disable_after_seconds=s.webhooks_disable_after_seconds)
    return Worker(runtime.temporal, task_queue=s.webhooks_task_queue, workflows=[WebhookDeliveries],
                  activities=[activities.attempt], max_concurrent_activities=s.webhooks_max_in_flight,
                  graceful_shutdown_timeout=timedelta(seconds=10))


def ops_checks(runtime: WebhookRuntime) -> dict[str, ReadinessCheck]:
    async def postgres() -> None:
        await runtime.pool.fetchval("SELECT 1")

    async def temporal() -> None:
        await runtime.temporal.service_client.check_health(timeout=timedelta(seconds=2))

    return {"postgres": postgres, "temporal": temporal}
