"""The timer shapes bench/commands.py compares. NAME/expiry is NAME's server under a load
whose every create carries its own ``expires_at`` (a day ahead: what is measured is
carrying the deadline and scheduling its timer, temporal/expiry.py); NAME/expiry-<shape>
the same with the timers swapped in the server process by ``swap_timers`` (the shape in
BENCH_EXPIRY_TIMERS, which ``timers_env`` sets): ``sleep`` started at once, each sleeping
until its deadline, instead of a start delay; ``each`` one timer workflow per payment;
``unscheduled`` the deadline carried, no timer; ``norpc`` the scheduling activity run,
no start request sent. All are compared with NAME in the same run."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from bench.common import ratio

# Loads: "" plain creates; "expiry" creates with a deadline, timers as shipped; the others
# the same deadlines with the timers swapped (swap_timers).
LOADS = ("", "expiry", "expiry-sleep", "expiry-each", "expiry-unscheduled", "expiry-norpc")
DEADLINE_AHEAD = timedelta(days=1)  # no timer fires during a run


def timers_env(load: str) -> dict[str, str]:
    if load not in LOADS:
        raise ValueError(f"unknown load {load!r}; expected one of {LOADS}")
    return {"BENCH_EXPIRY_TIMERS": load.removeprefix("expiry-")} if load.startswith("expiry-") else {}


def swap_timers() -> None:
    shape = os.environ.get("BENCH_EXPIRY_TIMERS")
    if shape == "sleep":
        _sleeping_timers()
    elif shape == "each":
        _timer_per_payment()
    elif shape == "unscheduled":  # the deadline carried, no timer: what scheduling costs
        from services.command.temporal import workflows

        workflows.expiry_timers = lambda command, result: []  # type: ignore[assignment]
    elif shape == "norpc":  # the scheduling activity runs, starts nothing: what its RPCs cost
        from services.command.temporal import expiry

        async def no_rpc(*args: object) -> None:
            return None

        expiry.schedule = no_rpc  # type: ignore[assignment]

def _sleeping_timers() -> None:
    """Timers started at once, each sleeping in its workflow until the deadline (the
    alternative to a start delay that temporal/expiry.py measured against)."""
    from temporalio.common import WorkflowIDConflictPolicy

    from services.command.commands import ExpiryOutcome, ExpiryTimers
    from services.command.temporal import expiry

    async def schedule(client, task_queue, origin, wake, timers, now) -> None:  # type: ignore[no-untyped-def]
        await client.start_workflow(expiry.WORKFLOW_TYPE, ExpiryTimers(timers=timers),
                                    id=expiry.expiry_workflow_id(origin, wake), task_queue=task_queue,
                                    result_type=ExpiryOutcome, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)

    expiry.schedule = schedule


def _timer_per_payment() -> None:
    """One timer workflow per payment (the design temporal/expiry.py measured against)."""
    from services.command.temporal import expiry

    async def schedule_all(client, task_queue, origin, timers, now) -> None:  # type: ignore[no-untyped-def]
        for i in range(0, len(timers), 32):
            await asyncio.gather(*(expiry.schedule(client, task_queue, f"{t.organization_id}/{t.payment_id}",
                                                   t.expires_at, [t], now)
                                   for t in timers[i:i + 32]))

    expiry.schedule_all = schedule_all


def print_expiry_ratios(by: dict[tuple[str, int], dict], expiring: list[str], sweep: list[int]) -> list[str]:
    """The NAME/<load> rows against NAME's in the same run (bench/commands.py's medians)."""
    if expiring:
        print("\n| variant | concurrency | creates/s vs the same without expires_at | p50 vs the same |")
        print("|---|---|---|---|")
    for variant in expiring:
        for concurrency in sweep:
            r, base = by[(variant, concurrency)], by.get((variant.partition("/")[0], concurrency))
            print(f"| {variant} | {concurrency} | {ratio(r['tput'], base['tput']) if base else '-'} "
                  f"| {ratio(r['p50'], base['p50']) if base else '-'} |")
    return expiring
