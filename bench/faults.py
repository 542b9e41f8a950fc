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

    python -m bench.faults                      # the long run (every fault the broker allows, ~3 min)
    python -m bench.faults --faults kill:projector,restart:postgres
    python -m bench.faults --kafka noida --faults restart:kafka,kafka-restart-under-load

Restarting Kafka needs a broker that keeps its records: the default embedded Tansu is
memory-only (a restart is a new, empty cluster), so the Kafka faults run only with
``--kafka noida``; noida-db 0.2.3 in turn never lets a group member killed with SIGKILL
be replaced (docs/design.md section 11), so ``kill:projector`` is left out there.

``tests/resilience`` runs a short campaign in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from devstack import LocalStack
from devstack.system import RunningSystem, base_url, isolated
from services.query.adapters.read_model import ReadModel
from shared.auth import SCOPE_READ, SCOPE_WRITE, cursor_key, mint_token
from shared.net import free_port
from shared.processes import LONG_RUNNING
from shared.settings import Settings

ORGS = ("org-a", "org-b", "org-c", "org-d")
TRANSITIONS = ("complete", "cancel", "fail")
# Every fault of the campaign, in the order they run. ``kill:P`` SIGKILLs process P and
# starts it again; ``restart:S`` stops server S and starts it with the same command line;
# the others are the combinations of issue 12.
ALL_FAULTS = (
    "kill:command-api", "kill:command-worker", "kill:relay", "kill:projector", "kill:query-api",
    "restart:postgres", "restart:mongo", "restart:redis", "restart:temporal", "restart:kafka",
    "projector-killed-while-redis-down", "relay-killed-while-postgres-restarts",
    "two-projectors-while-mongo-restarts", "kafka-restart-under-load",
)


# --------------------------------------------------------------------------- the clients


@dataclass
class ClientLog:
    """What the clients saw, and what was acknowledged to them."""

    statuses: Counter[str] = field(default_factory=Counter)
    acked: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, payment id) -> version
    processing: dict[str, list[str]] = field(default_factory=dict)  # org -> payment ids to transition
    quiet: set[str] = field(default_factory=set)  # organizations the load leaves alone from now on

    def ack(self, org: str, payment: dict[str, Any]) -> None:
        key = (org, payment["id"])
        self.acked[key] = max(self.acked.get(key, 0), int(payment["version"]))


async def _send(http: httpx.AsyncClient, log: ClientLog, method: str, url: str, org: str,
                headers: dict[str, str], body: Any, deadline: float) -> dict[str, Any] | None:
    """One command, retried with its Idempotency-Key until acknowledged or refused."""
    key = uuid.uuid4().hex
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            resp = await http.request(method, url, json=body, headers={**headers, "Idempotency-Key": key})
            log.statuses[str(resp.status_code)] += 1
            if resp.status_code in (200, 201):
                payment = resp.json()
                log.ack(org, payment)
                return payment
            if 400 <= resp.status_code < 500 and resp.status_code != 409:
                return None  # refused on purpose (e.g. a transition that lost a race)
            if resp.status_code == 409 and "idempotency" not in resp.text:
                return None
        except httpx.HTTPError as exc:
            log.statuses[type(exc).__name__] += 1
        await asyncio.sleep(delay + random.random() * delay)  # 202, 5xx, 409 in flight, no answer
        delay = min(delay * 2, 2.0)
    return None


async def run_load(settings: Settings, log: ClientLog, stop: asyncio.Event, rate: float) -> None:
    base = f"http://127.0.0.1:{settings.command_api_port}/v1/payments"
    auth = {org: {"Authorization": "Bearer " + mint_token(org, [SCOPE_WRITE], settings=settings)} for org in ORGS}
    rng = random.Random(7)
    pending: set[asyncio.Task[Any]] = set()
    async with httpx.AsyncClient(timeout=20) as http:
        i = 0
        begin = time.monotonic()
        while not stop.is_set():
            org = ORGS[i % len(ORGS)]
            if org in log.quiet:
                i += 1
                continue
            todo = log.processing.setdefault(org, [])
            deadline = time.monotonic() + 120
            if todo and rng.random() < 0.4:
                pid = todo.pop(rng.randrange(len(todo)))
                action = rng.choice(TRANSITIONS)
                coro = _send(http, log, "POST", f"{base}/{pid}/{action}", org, auth[org], None, deadline)
            else:
                body = {"amount": rng.randint(1, 10_000), "currency": rng.choice(("EUR", "USD", "JPY"))}

                async def create(org: str = org, body: dict[str, Any] = body, deadline: float = deadline) -> None:
                    made = await _send(http, log, "POST", base, org, auth[org], body, deadline)
                    if made is not None:
                        log.processing.setdefault(org, []).append(made["id"])

                coro = create()
            task = asyncio.create_task(coro)
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))  # open loop
        if pending:
            await asyncio.gather(*pending)


# --------------------------------------------------------------------------- the faults


KAFKA_FAULTS = ("restart:kafka", "kafka-restart-under-load")
# What each embedded broker cannot take (see the module docstring).
UNSUPPORTED = {"tansu": KAFKA_FAULTS, "noida": ("kill:projector", "projector-killed-while-redis-down",
                                               "two-projectors-while-mongo-restarts")}


class Campaign:
    def __init__(self, root: Path, kafka: str = "tansu") -> None:
        self.root = root
        self.stack = LocalStack(root / "stack", persist=True, headless=True, write_stack_file=False,
                                kafka_broker=kafka)
        self.system: RunningSystem | None = None
        self.settings: Settings | None = None
        self.env: dict[str, str] = {}
        self.extra: list[subprocess.Popen[bytes]] = []
        self.recoveries: list[tuple[str, float]] = []
        self.log: ClientLog | None = None
        self.peak_backlog = 0.0

    def start(self) -> None:
        endpoints = self.stack.start()
        base = Settings(**endpoints.as_settings(), data_dir=self.root / "data")
        self.settings, env = isolated(base, "faults", log_level="WARNING")
        self.env = {**env, **endpoints.as_env(), "PAYMENTS_DATA_DIR": str(self.root / "data")}
        self.system = RunningSystem(self.settings, self.root / "logs")
        self.system.start(self.env, timeout=120)

    def stop(self) -> None:
        for proc in self.extra:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        if self.system is not None:
            self.system.stop()
        self.stack.stop()

    # processes

    def kill(self, name: str) -> None:
        assert self.system is not None
        child = self.system.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def start_process(self, name: str, *, wait: bool = True) -> None:
        """Start ``name`` again; ``wait=False`` while a server it needs is down on purpose."""
        assert self.system is not None
        self.system.start(self.env, timeout=120, names=[name], wait=wait)

    def second_projector(self) -> subprocess.Popen[bytes]:
        env = {**self.env, "PAYMENTS_PROJECTOR_METRICS_PORT": str(free_port())}
        with open(self.root / "logs" / "projector-2.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", "projector"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.extra.append(proc)
        return proc

    # faults

    async def apply(self, fault: str) -> None:
        kind, _, target = fault.partition(":")
        if kind == "kill":
            self.kill(target)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.start_process, target)
        elif kind == "restart":
            await asyncio.to_thread(self.stack.stop_server, target)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.stack.start_server, target)
        elif fault == "projector-killed-while-redis-down":
            await self.stale_cache_probe()
        elif fault == "relay-killed-while-postgres-restarts":
            await asyncio.to_thread(self.stack.stop_server, "postgres")
            self.kill("relay")
            await asyncio.sleep(2.0)
            # The relay starts while PostgreSQL is still down: it waits for it at start-up.
            relay = asyncio.create_task(asyncio.to_thread(self.start_process, "relay"))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.stack.start_server, "postgres")
            await relay
        elif fault == "two-projectors-while-mongo-restarts":
            second = self.second_projector()
            await asyncio.sleep(5.0)  # the group rebalances over two members
            await asyncio.to_thread(self.stack.stop_server, "mongo")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.stack.start_server, "mongo")
            await asyncio.sleep(5.0)
            os.killpg(second.pid, signal.SIGTERM)
            await asyncio.to_thread(second.wait, 30)
        elif fault == "kafka-restart-under-load":
            await asyncio.to_thread(self.stack.stop_server, "kafka")
            await asyncio.sleep(3.0)
            await asyncio.to_thread(self.stack.start_server, "kafka")
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(ALL_FAULTS)}")

    async def stale_cache_probe(self, org: str = ORGS[-1]) -> None:
        """The projector dies while Redis is unreachable (paused: it keeps its data), after
        applying a change whose cache bump could not reach Redis. Nothing else happens to
        ``org`` afterwards, so only a durable bump keeps its cached answers fresh (the final
        check compares them with MongoDB)."""
        assert self.settings is not None and self.log is not None
        self.log.quiet.add(org)
        auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=self.settings)}
        query = f"http://127.0.0.1:{self.settings.query_api_port}/v1"
        redis_pid = self.stack.pids["redis"]
        async with httpx.AsyncClient(timeout=20) as http:
            for path in ("/payments", "/statistics", "/payments", "/statistics"):  # cached now
                (await http.get(query + path, headers=auth)).raise_for_status()
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                made = await _send(http, self.log, "POST",
                                   f"http://127.0.0.1:{self.settings.command_api_port}/v1/payments", org, auth,
                                   {"amount": 4242, "currency": "EUR"}, time.monotonic() + 60)
                assert made is not None, "the probe's create was not acknowledged"
                seen = await http.get(f"{query}/payments/{made['id']}", params={"min_version": 1}, headers=auth)
                assert seen.status_code == 200, seen.text  # projected: its bump is pending
                self.kill("projector")
                await asyncio.to_thread(self.start_process, "projector", wait=False)
                await asyncio.sleep(2.0)
            finally:
                os.kill(redis_pid, signal.SIGCONT)

    async def all_ready(self, timeout: float) -> float:
        """Seconds until every process answers /readyz 200 (raises after ``timeout``)."""
        assert self.settings is not None
        started = time.monotonic()
        urls = [base_url(process, self.settings) + "/readyz" for process in LONG_RUNNING]
        async with httpx.AsyncClient(timeout=3) as http:
            while True:
                codes = []
                for url in urls:
                    try:
                        codes.append((await http.get(url)).status_code)
                    except httpx.HTTPError:
                        codes.append(0)
                if all(c == 200 for c in codes):
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"not ready after {timeout:.0f}s: {dict(zip(urls, codes, strict=True))}")
                await asyncio.sleep(0.2)

    async def watch_backlog(self, stop: asyncio.Event) -> None:
        assert self.settings is not None
        url = f"http://127.0.0.1:{self.settings.relay_metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=2) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    for line in (await http.get(url)).text.splitlines():
                        if line.startswith("payments_outbox_backlog "):
                            self.peak_backlog = max(self.peak_backlog, float(line.split()[1]))
                await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- the checks


async def _postgres_state(url: str) -> tuple[dict[tuple[str, str], asyncpg.Record], list[str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT organization_id, id, amount, currency, status, version, deleted_at"
                                " FROM payments")
        gaps = await conn.fetch(
            "SELECT p.id, p.version, count(o.*) AS events, count(o.published_at) AS published,"
            " coalesce(max(o.payment_version), 0) AS newest"
            " FROM payments p LEFT JOIN outbox o ON o.organization_id = p.organization_id AND o.payment_id = p.id"
            " GROUP BY p.organization_id, p.id, p.version"
            " HAVING count(o.*) <> p.version OR count(o.published_at) <> p.version"
            " OR coalesce(max(o.payment_version), 0) <> p.version")
    finally:
        await conn.close()
    problems = [f"outbox of {g['id']}: version {g['version']}, {g['events']} events, {g['published']} published"
                for g in gaps]
    return {(r["organization_id"], r["id"]): r for r in rows}, problems


async def _read_model_state(mongo: AsyncMongoClient, settings: Settings) -> tuple[
        dict[tuple[str, str], dict[str, Any]], set[tuple[str, str]], dict[str, dict[str, int]]]:
    """(live payments, tombstones, statistics buckets) of the active generation."""
    cols = await ReadModel(mongo[settings.mongo_db], cursor_key(settings)).active(fresh=True)
    docs = {(d["organization_id"], d["id"]): d async for d in cols.payments.find({})}
    tombs = {(d["organization_id"], d["id"]) async for d in cols.tombstones.find({})}
    stats = {d["_id"]: {k: d[k] for k in ("count", "sum", "min", "max")} async for d in cols.statistics.find({})}
    return docs, tombs, stats


def _recount(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for d in docs.values():
        key = f"{d['organization_id']}|{d['day']}|{d['currency']}|{d['status']}"
        b = out.setdefault(key, {"count": 0, "sum": 0, "min": d["amount"], "max": d["amount"]})
        b["count"] += 1
        b["sum"] += d["amount"]
        b["min"] = min(b["min"], d["amount"])
        b["max"] = max(b["max"], d["amount"])
    return out


async def _dlq_records(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        tps = [TopicPartition(settings.dlq_topic, p) for p in consumer.partitions_for_topic(settings.dlq_topic) or ()]
        if not tps:
            return 0
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        batches = await consumer.getmany(timeout_ms=2000)
        return sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()


async def _cached_answers(settings: Settings, docs: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Search totals and statistics counts as the query API serves them (through Redis)."""
    problems = []
    base = f"http://127.0.0.1:{settings.query_api_port}/v1"
    async with httpx.AsyncClient(timeout=10) as http:
        for org in ORGS:
            auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ], settings=settings)}
            expected = sum(1 for (o, _) in docs if o == org)
            for _ in range(2):  # the second answer comes from the cache
                total = (await http.get(f"{base}/payments", headers=auth)).json()["total"]
                count = (await http.get(f"{base}/statistics", headers=auth)).json()["count"]
                if total != expected or count != expected:
                    problems.append(f"{org}: query API says total {total}, statistics {count}; MongoDB has {expected}")
    return problems


async def check(settings: Settings, log: ClientLog) -> list[str]:
    """Every invariant of the module docstring; returns the violations (empty: all good)."""
    rows, problems = await _postgres_state(settings.database_url)
    for key, version in log.acked.items():
        row = rows.get(key)
        if row is None or row["version"] < version:
            problems.append(f"acknowledged {key} v{version} but PostgreSQL has {row and row['version']}")
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    try:
        docs, tombs, stats = await _read_model_state(mongo, settings)
        for key, row in rows.items():
            if row["deleted_at"] is not None:
                if key not in tombs or key in docs:
                    problems.append(f"deleted {key} is not a tombstone in the read model")
                continue
            doc = docs.get(key)
            if doc is None:
                problems.append(f"{key} v{row['version']} missing from the read model")
            elif (doc["version"], doc["status"], doc["amount"]) != (row["version"], row["status"], row["amount"]):
                problems.append(f"{key}: read model v{doc['version']} {doc['status']}, PostgreSQL v{row['version']} "
                                f"{row['status']}")
        problems += [f"{key} in the read model, not in PostgreSQL" for key in set(docs) - set(rows)]
        if stats != _recount(docs):
            problems.append("statistics differ from a recount of the read model")
        problems += await _cached_answers(settings, docs)
    finally:
        await mongo.close()
    dead = await _dlq_records(settings)
    if dead:
        problems.append(f"{dead} records in the dead-letter topic")
    return problems


async def converge(settings: Settings, log: ClientLog, timeout: float) -> tuple[list[str], float]:
    """Check until clean (the pipeline drains) or ``timeout``; returns the last problems and the time."""
    started = time.monotonic()
    while True:
        problems = await check(settings, log)
        if not problems or time.monotonic() - started > timeout:
            return problems, time.monotonic() - started
        await asyncio.sleep(1.0)


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
              kafka: str = "tansu") -> tuple[list[str], ClientLog, str]:
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
    parser.add_argument("--kafka", choices=sorted(UNSUPPORTED), default="tansu", help="embedded Kafka broker")
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
    problems, _, text = asyncio.run(run(faults, args.rate, args.settle, kafka=args.kafka))
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
