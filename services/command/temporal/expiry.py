"""Payment deadlines as Temporal timers. The workflow that committed deadlines (a create,
a bulk create, a group-committed batch, an update that moved one) starts, after its
commit, one ``PaymentExpiry`` workflow per group of deadlines less than a second apart
(taken in order, from the earliest: a deadline fires at most a second late), with a
start delay until the group's last deadline (no workflow task until then), under a
deterministic id: that workflow's own id and that moment. A retried scheduling finds it (and a finished one is
not run again), so a retried command never adds a timer. One timer per payment would be
one workflow execution per create, which costs a group-committed batch most of its
throughput (docs/benchmarks.md, "Expiry timers").

A moved deadline gets a timer of its own (its update's); the old one still fires, and
expires nothing: the expiry checks the stored deadline in its transaction
(handlers.expire), so whatever timers exist, at most one expiry happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from services.command.commands import ExpiryOutcome, ExpiryTimer, ExpiryTimers

WORKFLOW_TYPE = "PaymentExpiry"
GROUP_SPAN = timedelta(seconds=1)  # how late a deadline may fire for sharing a timer
_AT_ONCE = 32  # start requests of one scheduling in flight at a time


def expiry_workflow_id(origin: str, wake: datetime) -> str:
    """``origin``: the id of the workflow that committed the deadlines; ``wake``: the last."""
    return f"payments-expiry/{wake.strftime('%Y%m%dT%H%M%S.%fZ')}/{origin}"


def timer_groups(timers: Sequence[ExpiryTimer]) -> dict[datetime, list[ExpiryTimer]]:
    """Timers by the moment their group wakes up: groups of deadlines less than
    ``GROUP_SPAN`` apart, from the earliest on (deterministic: the same timers, the same groups)."""
    groups: list[list[ExpiryTimer]] = []
    for timer in sorted(timers, key=lambda t: (t.expires_at, t.organization_id, t.payment_id)):
        if groups and timer.expires_at - groups[-1][0].expires_at < GROUP_SPAN:
            groups[-1].append(timer)
        else:
            groups.append([timer])
    return {group[-1].expires_at: group for group in groups}


async def schedule(client: Client, task_queue: str, origin: str, wake: datetime, timers: list[ExpiryTimer],
                   now: datetime) -> None:
    delay = wake - now
    try:
        await client.start_workflow(
            WORKFLOW_TYPE, ExpiryTimers(timers=timers), id=expiry_workflow_id(origin, wake),
            task_queue=task_queue, result_type=ExpiryOutcome,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            start_delay=delay if delay > timedelta(0) else None)
    except WorkflowAlreadyStartedError:
        pass  # it ran already: this scheduling is a retry


async def schedule_all(client: Client, task_queue: str, origin: str, timers: Sequence[ExpiryTimer],
                       now: datetime) -> None:
    groups = list(timer_groups(timers).items())
    for i in range(0, len(groups), _AT_ONCE):
        await asyncio.gather(*(schedule(client, task_queue, origin, wake, group, now)
                               for wake, group in groups[i:i + _AT_ONCE]))
