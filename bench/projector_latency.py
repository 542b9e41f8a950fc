"""Projector latency: one event produced -> readable in the read model, per consumer setting.

Runs `payments projector` three times in the same run, each on its own topic and MongoDB
database: with the project's default (PAYMENTS_KAFKA_FETCH_MAX_WAIT_MS 500 ms, no batch
wait), with a 5 ms batch wait, and with the 25 ms fetch wait the local stack writes for
Tansu. Run it once per broker (``stack up --kafka apache|noida|tansu``), or
all brokers in one run with bench/kafka_brokers.py.
Events are produced one at a time (a lone event is the worst case for batching); the
time until the read model has the payment is polled every 2 ms. Baseline: a raw aiokafka
produce -> consume round trip on the same broker.

    payments stack up --detach
    python -m bench.projector_latency --events 40
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from bench.common import kafka_env
from bench.visibility import kafka_round_trips
from services.query.adapters.read_model import MongoReadModel
from shared.auth import cursor_key
from shared.events import EventType, new_event
from shared.net import free_port
from shared.payment import PaymentSnapshot, PaymentStatus
from shared.settings import Settings

CONFIGS = {"default (500 ms fetch, no batch wait)": (500, 0.0),
           "5 ms batch wait (500 ms fetch)": (500, 0.005),
           "short fetch (25 ms fetch, no batch wait)": (25, 0.0)}


def _event(i: int) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    event = new_event(EventType.CREATED, PaymentSnapshot(
        id=f"lat-{i}", organization_id="bench-org", amount=100 + i, currency="EUR",
        status=PaymentStatus.PROCESSING, version=1, created_at=now, updated_at=now))
    return event.subject.encode(), event.to_json_bytes()


async def measure(settings: Settings, fetch_max_wait_ms: int, batch_wait: float, n: int) -> list[float]:
    suffix = uuid.uuid4().hex[:8]
    topic, db_name = f"bench.projector-latency-{suffix}", f"bench_projector_latency_{suffix}"
    env = {**os.environ, **kafka_env(settings), "PAYMENTS_EVENTS_TOPIC": topic, "PAYMENTS_MONGO_DB": db_name,
           "PAYMENTS_PROJECTOR_METRICS_PORT": str(free_port()), "PAYMENTS_LOG_LEVEL": "WARNING"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    read_model = MongoReadModel(mongo[db_name], cursor_key(settings))
    await producer.start()
    projector = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "projector", "--fetch-max-wait-ms", str(fetch_max_wait_ms),
         "--batch-wait", str(batch_wait)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def produce_and_wait(i: int, deadline: float) -> float:
        key, value = _event(i)
        started = time.perf_counter()
        await producer.send_and_wait(topic, value, key=key)
        while await read_model.version("bench-org", f"lat-{i}") is None:
            if time.perf_counter() > started + deadline:
                raise TimeoutError(f"event {i} not projected within {deadline} s")
            await asyncio.sleep(0.002)
        return (time.perf_counter() - started) * 1000

    try:
        await produce_and_wait(-1, 60)  # the group has joined and the topic exists
        out = []
        for i in range(n):
            out.append(await produce_and_wait(i, 10))
            await asyncio.sleep(0.05)  # lone events: nothing else to fill a batch
        return out
    finally:
        projector.terminate()
        projector.wait(30)
        await producer.stop()
        await mongo.drop_database(db_name)
        await mongo.close()


def _pct(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"p50 {q[49]:7.1f} ms   p99 {q[98]:7.1f} ms   (n={len(ms)})"


async def main(n: int) -> None:
    settings = Settings()
    rows = {"raw Kafka produce->consume (baseline)": await kafka_round_trips(settings, 200)}
    for name, (fetch_wait, batch_wait) in CONFIGS.items():
        print(f"measuring: {name}…", flush=True)
        rows[name] = await measure(settings, fetch_wait, batch_wait, n)
    for name, ms in rows.items():
        print(f"{name:<46} {_pct(ms)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40, help="lone events per setting (default 40, max 500)")
    args = parser.parse_args()
    if not 2 <= args.events <= 500:
        parser.error("--events must be between 2 and 500 (bounded load)")
    asyncio.run(main(args.events))
