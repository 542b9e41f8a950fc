"""Redelivery, for the API and the CLI alike: finished deliveries back to pending, handed
to their workflows again (behind whatever that payment has queued)."""

from __future__ import annotations

from datetime import datetime

from temporalio.client import Client

from services.webhooks.adapters.store import WebhookStore
from services.webhooks.bootstrap import retry_window
from services.webhooks.temporal.client import hand_over
from shared.settings import Settings


async def redeliver(store: WebhookStore, temporal: Client, settings: Settings, org: str, endpoint_id: str, *,
                    delivery_id: str | None = None, failed_since: datetime | None = None) -> int:
    refs = await store.redeliver(org, endpoint_id, delivery_id=delivery_id, failed_since=failed_since)
    if refs:
        await hand_over(temporal, settings.webhooks_task_queue, retry_window(settings), org, endpoint_id, refs)
    return len(refs)
