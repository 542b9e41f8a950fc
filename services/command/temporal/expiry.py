"""Payment deadlines as Temporal timers. The workflow that committed deadlines (a create,
a bulk create, a group-committed batch, an update that moved one) starts, after its
commit, one ``PaymentExpiry`` workflow per second in which they fall, with a start delay
until that second (no workflow task until then), under a deterministic id: that
workflow's own id and the second. A retried scheduling finds it (and a finished one is
not run again), so a retried command never adds a timer. One timer per payment would be
one workflow execution per create, which costs a group-committed batch most of its
throughput (docs/benchmarks.md, "Expiry timers").

A moved deadline gets a timer of its own (its update's); the old one still fires, and
expires nothing: the expiry checks the stored deadline in its transaction
(handlers.expire), so whatever timers exist, at most one expiry happens.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from services.command.commands import ExpiryOutcome, ExpiryTimer, ExpiryTimers

WORKFLOW_TYPE = "PaymentExpiry"
_AT_ONCE = 32  # start requests of one scheduling in flight at a time


def second_of(deadline: datetime) -> datetime:
    """The whole second a deadline falls in, rounded up: its timer's wake-up."""
    whole = deadline.replace(microsecond=0)
    return whole if whole == deadline else whole + timedelta(seconds=1)


def expiry_workflow_id(origin: str, second: datetime) -> str:
    """``origin``: the id of the workflow that committed the deadlines."""
    return f"payments-expiry/{second.strftime('%Y%m%dT%H%M%SZ')}/{origin}"


def timers_by_second(timers: Sequence[ExpiryTimer]) -> dict[datetime, list[ExpiryTimer]]:
    groups: dict[datetime, list[ExpiryTimer]] = defaultdict(list)
    for timer in timers:
        groups[second_of(timer.expires_at)].append(timer)
    return dict(groups)


async def schedule(client: Client, task_queue: str, origin: str, second: datetime, timers: list[ExpiryTimer],
                   now: datetime) -> None:
    delay = second - now
    try:
        await client.start_workflow(
            WORKFLOW_TYPE, ExpiryTimers(timers=timers), id=expiry_workflow_id(origin, second),
            task_queue=task_queue, result_type=ExpiryOutcome,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            start_delay=delay if delay > timedelta(0) else None)
    except WorkflowAlreadyStartedError:
        pass  # it ran already: this scheduling is a retry


async def schedule_all(client: Client, task_queue: str, origin: str, timers: Sequence[ExpiryTimer],
                       now: datetime) -> None:
    groups = list(timers_by_second(timers).items())
    for i in range(0, len(groups), _AT_ONCE):
        await asyncio.gather(*(schedule(client, task_queue, origin, second, group, now)
                               for second, group in groups[i:i + _AT_ONCE]))
