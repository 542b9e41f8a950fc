"""Benchmark (issue 23): ``payments replay --from postgres`` against ``payments replay`` from
Kafka, on the same payments: events/s and the replay process's peak memory.

Writes ``--payments`` created events once into both sources (a scratch PostgreSQL database
migrated by the command side: its outbox, the event log; and a topic of its own), then
runs the real CLI, ``payments replay --from kafka|postgres --no-progress``, as a child
process per run, alternating the sources for ``--rounds`` rounds, each into a fresh
generation of its own MongoDB database. Peak memory: the child's resident set, sampled
every 20 ms (psutil). Uses the servers of the environment / ``payments stack up``.

    python -m bench.replay --payments 50000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psutil
from aiokafka import AIOKafkaProducer

from bench.common import scratch_database
from devstack.system import isolated
from services.command.adapters.store import create_pool, migrate
from shared.events import EventType, new_event
from shared.kafka import ensure_topics, event_topics
from shared.payment import PaymentSnapshot
from shared.settings import Settings

SOURCE = "/payments/command"


def events(n: int) -> list:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        at = t0 + timedelta(seconds=i)
        payment = PaymentSnapshot(id=f"pay-{i:06d}", organization_id=f"org-{i % 20}", user_id=f"u{i % 7}",
                                  amount=100 + i % 5000, currency="EUR", status="processing",
                                  description="replay bench", metadata={"i": str(i)}, version=1,
                                  created_at=at, updated_at=at)
        out.append(new_event(EventType.CREATED, payment, source=SOURCE, actor="bench", command_id=f"c{i}", time=at))
    return out


async def fill(settings: Settings, database_url: str, evs: list) -> None:
    pool = await create_pool(database_url, size=2)
    try:
        await migrate(pool)
        async with pool.acquire() as conn:
            await conn.copy_records_to_table(
                "outbox", columns=["event_id", "organization_id", "payment_id", "payment_version", "event_type",
                                   "payload", "created_at", "published_at", "actor", "command_id"],
                records=[(uuid.UUID(e.id), e.organizationid, e.subject, 1, e.type.short, e.to_json_bytes(), e.time,
                          e.time, e.actor, e.commandid) for e in evs])
    finally:
        await pool.close()
    await ensure_topics(settings.kafka_bootstrap, event_topics(settings), create=True)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        pending = [await producer.send(settings.events_topic, e.to_json_bytes(), key=e.subject.encode()) for e in evs]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def cleanup(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from pymongo import AsyncMongoClient

    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    await mongo.drop_database(settings.mongo_db)
    await mongo.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([t.name for t in event_topics(settings)])
    finally:
        await admin.close()


def run(source: str, env: dict[str, str]) -> dict:
    """One replay; its events/s and peak RSS (MiB)."""
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "services.cli", "replay", "--from", source, "--no-progress",
                              "--batch-size", "1000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"replay --from {source} failed: {err[-2000:]}")
    found = re.search(r"replayed (\d+) events from \w+ in ([\d.]+)s", out)
    assert found, out
    n, seconds = int(found.group(1)), float(found.group(2))
    return {"source": source, "events": n, "seconds": seconds, "rate": n / seconds, "wall": time.monotonic() - started,
            "peak_mib": peak / 2**20}


async def main(args: argparse.Namespace) -> None:
    base = Settings()
    async with scratch_database(base.database_url, "payments_bench_replay") as database_url:
        settings, env = isolated(base, "replay-bench", database_url=database_url)
        evs = events(args.payments)
        t = time.monotonic()
        await fill(settings, database_url, evs)
        print(f"# {len(evs)} events written to both sources in {time.monotonic() - t:.1f}s", file=sys.stderr)
        del evs
        rows = []
        for _ in range(args.rounds):
            for source in ("kafka", "postgres"):
                rows.append(await asyncio.to_thread(run, source, env))
                print(f"#   {rows[-1]}", file=sys.stderr, flush=True)
        await cleanup(settings)
    print(f"{args.payments} payments (one created event each), {args.rounds} alternating round(s), batch 1000\n")
    print("| source | events | events/s (median) | rounds | peak RSS MiB (max) |\n|---|---|---|---|---|")
    by = {s: [r for r in rows if r["source"] == s] for s in ("kafka", "postgres")}
    for source, runs in by.items():
        rates = ", ".join(f"{r['rate']:.0f}" for r in runs)
        print(f"| {source} | {runs[0]['events']} | {statistics.median(r['rate'] for r in runs):.0f} "
              f"| {rates} | {max(r['peak_mib'] for r in runs):.0f} |")
    k, p = (statistics.median(r["rate"] for r in by[s]) for s in ("kafka", "postgres"))
    print(f"\npostgres / kafka events/s: {p / k:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
