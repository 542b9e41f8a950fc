"""Hand deliveries to their workflow: signal-with-start of ``WebhookDeliveries`` under
the id of (endpoint, organization, payment), which serializes one payment's deliveries
to one endpoint."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from temporalio.client import Client, WorkflowHandle

from services.webhooks.messages import DeliveryRef, PaymentDeliveries, RetryWindow
from services.webhooks.temporal.workflows import WebhookDeliveries


def workflow_id(endpoint_id: str, organization_id: str, payment_id: str) -> str:
    return f"webhook-{endpoint_id}-{organization_id}-{payment_id}"


async def hand_over(client: Client, task_queue: str, retry: RetryWindow, organization_id: str, endpoint_id: str,
                    items: Sequence[tuple[str, DeliveryRef]], *, concurrency: int = 32
                    ) -> dict[str, WorkflowHandle]:
    """``items``: ``(payment id, ref)`` in the order to deliver. One payment's refs are
    signalled in order; different payments concurrently. Returns each payment's workflow."""
    by_payment: defaultdict[str, list[DeliveryRef]] = defaultdict(list)
    for payment_id, ref in items:
        by_payment[payment_id].append(ref)
    gate = asyncio.Semaphore(concurrency)
    handles: dict[str, WorkflowHandle] = {}

    async def one_payment(payment_id: str, refs: list[DeliveryRef]) -> None:
        async with gate:
            for ref in refs:
                handles[payment_id] = await client.start_workflow(
                    WebhookDeliveries.run,
                    PaymentDeliveries(organization_id=organization_id, endpoint_id=endpoint_id,
                                      payment_id=payment_id, retry=retry),
                    id=workflow_id(endpoint_id, organization_id, payment_id), task_queue=task_queue,
                    start_signal="deliver", start_signal_args=[ref])

    async with asyncio.TaskGroup() as group:
        for payment_id, refs in by_payment.items():
            group.create_task(one_payment(payment_id, refs))
    return handles
