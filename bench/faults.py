"""Fault campaign: bounded command load while servers restart and processes are killed,
then a check that nothing was lost, duplicated or left stale.

A private, persistent local stack (all five servers embedded, so each can be restarted)
and every process of ``payments up`` run in a scratch directory. Clients send
creates and transitions through the command API, each with an ``Idempotency-Key`` and
retrying on 5xx, 202 and transport errors as a careful client would. Meanwhile the
faults run one after the other, each followed by a wait until every process is ready
again. Then the load stops, the pipeline drains, and the checks run:

* every acknowledged command (HTTP, or Kafka through the intake) is in PostgreSQL (version
  at least the acknowledged one);
* the outbox holds versions 1..N of every payment, all published;
* the read model equals PostgreSQL (no payment missing, extra or stale);
* the statistics equal a recount of the read model;
* no cached answer (search totals, statistics) differs from MongoDB;
* the dead-letter topics (events, commands) are empty; every process is alive and ready.

It prints a report: faults, time to recover, peak outbox backlog, what clients saw.

    python -m bench.faults                      # the long run: every fault, on Apache Kafka
    python -m bench.faults --faults dynamic-kill:projector,restart:kafka
    python -m bench.faults --kafka noida        # every fault the PyPI broker allows

The broker is Apache Kafka wherever java 17+ and mvn exist (else noida-db), and it takes
every fault: the processes are dynamic group members, as in production, so a SIGKILLed
consumer's partitions go back to the group after its session timeout; each dynamic kill
must see its consumer back within the session timeout + 5 s. noida-db never evicts a
vanished dynamic member (its processes join as static members, and the dynamic kills are
left out there); Tansu is memory-only, so the Kafka faults are left out there
(docs/design.md section 11).

``tests/resilience`` runs a short campaign in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fault_checks import converge
from bench.fault_injection import ALL_FAULTS, UNSUPPORTED, Campaign
from bench.fault_load import ClientLog, run_intake_load, run_load
from devstack.brokers import KAFKA_BROKERS, session_broker

# --------------------------------------------------------------------------- the campaign


async def campaign(campaign: Campaign, faults: list[str], rate: float, settle: float,
                   say: Callable[[str], None] = print) -> tuple[list[str], ClientLog]:
    assert campaign.settings is not None
    log = campaign.log = ClientLog()
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(campaign.settings, log, stop, rate))
    intake_load = asyncio.create_task(run_intake_load(campaign.settings, log, stop, rate / 4))
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
        await intake_load
        await watcher
    problems, drained = await converge(campaign.settings, log, timeout=60)
    say(f"  pipeline drained in {drained:.1f}s")
    problems += [f"{name} consumed again {seconds:.1f}s after the fault, beyond {bound:.0f}s (session timeout + 5 s)"
                 for name, seconds, bound in campaign.consumer_recoveries if seconds > bound]
    return problems, log


def report(problems: list[str], log: ClientLog, camp: Campaign) -> str:
    lines = ["", "fault campaign report", "====================="]
    lines += [f"fault {name:<40} recovered in {seconds:5.1f}s" for name, seconds in camp.recoveries]
    lines += [f"consumer {name:<37} consuming again {seconds:5.1f}s after the fault (bound {bound:.0f}s)"
              for name, seconds, bound in camp.consumer_recoveries]
    lines.append(f"Kafka broker: {camp.stack.kafka_broker}")
    lines.append(f"acknowledged payments: {len(log.acked)}; peak outbox backlog: {camp.peak_backlog:.0f}")
    lines.append("what clients saw: " + ", ".join(f"{k}: {v}" for k, v in sorted(log.statuses.items())))
    lines.append(f"5xx answers: {sum(v for k, v in log.statuses.items() if k.startswith('5'))}")
    lines.append("violations: none" if not problems else f"violations ({len(problems)}):")
    lines += [f"  - {p}" for p in problems[:50]]
    return "\n".join(lines)


async def run(faults: list[str], rate: float, settle: float, root: Path | None = None,
              kafka: str | None = None) -> tuple[list[str], ClientLog, str]:
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="payments-faults-"))
        root.chmod(0o711)  # as root, the embedded PostgreSQL runs as another user and must enter it
    camp = Campaign(root, kafka)
    # The load's own Kafka clients log every retry while the broker restarts; what they
    # saw is counted in the report instead.
    kafka_log = logging.getLogger("aiokafka")
    level, kafka_log.level = kafka_log.level, logging.CRITICAL
    print(f"starting a persistent stack ({camp.stack.kafka_broker} Kafka) and every process in {root}…", flush=True)
    try:
        await asyncio.to_thread(camp.start)  # inside: a process failing to start still stops the stack
        problems, log = await campaign(camp, faults, rate, settle)
        problems += [f"process {n} not ready at the end" for n in await _unready(camp)]
    finally:
        await asyncio.to_thread(camp.stop)
        kafka_log.setLevel(level)
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
    parser.add_argument("--kafka", choices=KAFKA_BROKERS, default=session_broker()[0],
                        help="the stack's Kafka broker (default: apache where java 17+ and mvn exist, else noida)")
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
