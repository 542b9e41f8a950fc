"""Payment deadlines as Temporal timers: one ``PaymentExpiry`` workflow per (organization,
payment), under a deterministic id, so that a retried create or a moved deadline never
leaves two timers. A created payment's timer starts with a start delay (no workflow task
until the deadline: docs/benchmarks.md, "Expiry timers"); a moved deadline is a
signal-with-start, which wakes a delayed timer or reaches a sleeping one, and starts one
if there is none. Whatever timers exist, the expiry itself checks the stored deadline
(handlers.expire), so at most one expiry happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from services.command.commands import ExpiryOutcome, ExpiryTimer

WORKFLOW_TYPE = "PaymentExpiry"
MOVE_SIGNAL = "payments.expiry.move"
_AT_ONCE = 32  # start requests of one schedule in flight at a time


def expiry_workflow_id(org: str, payment_id: str) -> str:
    return f"payments-expiry/{org}/{payment_id}"


async def schedule(client: Client, task_queue: str, timer: ExpiryTimer, now: datetime) -> None:
    wid = expiry_workflow_id(timer.organization_id, timer.payment_id)
    if timer.version == 1:  # a create's: a running timer (a retried create's) is kept
        delay = timer.expires_at - now
        await client.start_workflow(
            WORKFLOW_TYPE, timer, id=wid, task_queue=task_queue, result_type=ExpiryOutcome,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_delay=delay if delay > timedelta(0) else None)
    else:  # a move: the running timer takes it (the highest version wins), or a new one starts
        await client.start_workflow(
            WORKFLOW_TYPE, timer, id=wid, task_queue=task_queue, result_type=ExpiryOutcome,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_signal=MOVE_SIGNAL, start_signal_args=[timer])


async def schedule_all(client: Client, task_queue: str, timers: Sequence[ExpiryTimer], now: datetime) -> None:
    for i in range(0, len(timers), _AT_ONCE):
        await asyncio.gather(*(schedule(client, task_queue, t, now) for t in timers[i:i + _AT_ONCE]))
