"""Fault campaign: bounded command load while servers restart and processes are killed,
then a check that nothing was lost, duplicated or left stale.

A private, persistent local stack (all five servers embedded, so each can be restarted)
and every process of ``payments up`` run in a scratch directory. Clients send
creates and transitions through the command API, each with an ``Idempotency-Key`` and
retrying on 5xx, 202 and transport errors as a careful client would. Meanwhile the
faults run one after the other, each followed by a wait until every process is ready
again. Then the load stops, the pipeline drains, and the checks run:

* every acknowledged command is in PostgreSQL (version at least the acknowledged one);
* the outbox holds versions 1..N of every payment, all published;
* the read model equals PostgreSQL (no payment missing, extra or stale);
* the statistics equal a recount of the read model;
* no cached answer (search totals, statistics) differs from MongoDB;
* the dead-letter topic is empty; every process is alive and ready.

It prints a report: faults, time to recover, peak outbox backlog, what clients saw.

    python -m bench.faults                      # the long run: every fault, on noida-db
    python -m bench.faults --faults kill:projector,restart:kafka
    python -m bench.faults --kafka tansu        # every fault Tansu allows

The default broker, noida-db, takes every fault: it keeps its records across a restart,
and the processes join their consumer groups as static members, so a killed projector
started again takes its partitions back at once (docs/design.md section 11). Tansu is
memory-only (a restart is a new, empty cluster), so the Kafka faults are left out there.

``tests/resilience`` runs a short campaign in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fault_checks import converge
from bench.fault_injection import ALL_FAULTS, UNSUPPORTED, Campaign
from bench.fault_load import ClientLog, run_load
from devstack.binaries import KAFKA_BROKERS

# --------------------------------------------------------------------------- the campaign


async def campaign(campaign: Campaign, faults: list[str], rate: float, settle: float,
                   say: Callable[[str], None] = print) -> tuple[list[str], ClientLog]:
    assert campaign.settings is not None
    log = campaign.log = ClientLog()
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(campaign.settings, log, stop, rate))
    watcher = asyncio.create_task(campaign.watch_backlog(stop))
    try:
        await asyncio.sleep(settle)
        for fault in faults:
            t0 = time.monotonic()
            await campaign.apply(fault)
            recovered = await campaign.all_ready(timeout=90)
            campaign.recoveries.append((fault, time.monotonic() - t0))
            say(f"  {fault:<40} done in {time.monotonic() - t0:5.1f}s (ready {recovered:4.1f}s after)")
            await asyncio.sleep(settle)
    finally:
        stop.set()
        await load
        await watcher
    problems, drained = await converge(campaign.settings, log, timeout=60)
    say(f"  pipeline drained in {drained:.1f}s")
    return problems, log


def report(problems: list[str], log: ClientLog, camp: Campaign) -> str:
    lines = ["", "fault campaign report", "====================="]
    lines += [f"fault {name:<40} recovered in {seconds:5.1f}s" for name, seconds in camp.recoveries]
    lines.append(f"acknowledged payments: {len(log.acked)}; peak outbox backlog: {camp.peak_backlog:.0f}")
    lines.append("what clients saw: " + ", ".join(f"{k}: {v}" for k, v in sorted(log.statuses.items())))
    lines.append(f"5xx answers: {sum(v for k, v in log.statuses.items() if k.startswith('5'))}")
    lines.append("violations: none" if not problems else f"violations ({len(problems)}):")
    lines += [f"  - {p}" for p in problems[:50]]
    return "\n".join(lines)


async def run(faults: list[str], rate: float, settle: float, root: Path | None = None,
              kafka: str = KAFKA_BROKERS[0]) -> tuple[list[str], ClientLog, str]:
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="payments-faults-"))
        root.chmod(0o711)  # as root, the embedded PostgreSQL runs as another user and must enter it
    camp = Campaign(root, kafka)
    print(f"starting a persistent stack and every process in {root}…", flush=True)
    try:
        await asyncio.to_thread(camp.start)  # inside: a process failing to start still stops the stack
        problems, log = await campaign(camp, faults, rate, settle)
        problems += [f"process {n} not ready at the end" for n in await _unready(camp)]
    finally:
        await asyncio.to_thread(camp.stop)
    return problems, log, report(problems, log, camp)


async def _unready(camp: Campaign) -> list[str]:
    try:
        await camp.all_ready(timeout=10)
        return []
    except TimeoutError as exc:
        return [str(exc)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", default=None, help="comma-separated faults (default: all the broker allows)")
    parser.add_argument("--kafka", choices=KAFKA_BROKERS, default=KAFKA_BROKERS[0], help="embedded Kafka broker")
    parser.add_argument("--rate", type=float, default=15.0, help="commands per second (default 15)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load between faults (default 3)")
    args = parser.parse_args(argv)
    unsupported = UNSUPPORTED[args.kafka]
    faults = ([f for f in args.faults.split(",") if f] if args.faults
              else [f for f in ALL_FAULTS if f not in unsupported])
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(ALL_FAULTS)}")
    if refused := [f for f in faults if f in unsupported]:
        parser.error(f"{', '.join(refused)} cannot run on --kafka {args.kafka} (see --help)")
    try:
        problems, _, text = asyncio.run(_stoppable(run(faults, args.rate, args.settle, kafka=args.kafka)))
    except asyncio.CancelledError:
        print("interrupted: the stack and its processes were stopped", file=sys.stderr)
        return 130
    print(text)
    return 1 if problems else 0


async def _stoppable(campaign_run: Any) -> Any:
    """SIGTERM / SIGINT cancel the run, so that its ``finally`` stops the stack: the
    servers started from a worker thread do not die with this process by themselves."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await campaign_run


if __name__ == "__main__":
    sys.exit(main())
