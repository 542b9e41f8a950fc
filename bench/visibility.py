"""Write-to-read visibility lag under a steady command load, on the running system.

Starts the processes of the system (devstack/system.py) on the stack of ``payments stack up``,
then sends creates at a fixed rate through the command API. For each payment it
measures:

* command latency: POST /v1/payments until 201 (the write is durable);
* visibility lag: from that 201 until GET /v1/payments/{id}?min_version=1 on the query
  API answers 200 (outbox -> relay -> Kafka -> projector -> MongoDB), split at the
  projector's write (the ``projected_at`` of the payment's document);

and, as a baseline in the same run, a raw Kafka produce -> consume round trip through
the same broker (the floor any event pipeline on this broker pays).

    payments stack up --detach
    python -m bench.visibility --rate 20 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from devstack.system import RunningSystem, isolated
from services.query.adapters.read_model import MongoReadModel
from services.query.domain import document_id
from shared.auth import SCOPE_READ, SCOPE_WRITE, cursor_key, mint_token
from shared.kafka import consumer_options
from shared.settings import Settings

# payment id -> (wall time of the 201, of the readable answer), for split_lag
wall: dict[str, tuple[float, float]] = {}


def _pct(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"p50 {q[49]:8.1f} ms   p99 {q[98]:8.1f} ms   (n={len(ms)})"


async def kafka_round_trips(settings: Settings, n: int) -> list[float]:
    topic = f"bench.rtt-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", **consumer_options(settings),
    )
    await producer.start()
    await producer.send_and_wait(topic, b"warmup")  # creates the topic
    await consumer.start()
    out: list[float] = []
    try:
        await consumer.getone()  # the warmup message: the group has joined
        for i in range(n):
            started = time.perf_counter()
            await producer.send_and_wait(topic, str(i).encode())
            await consumer.getone()
            out.append((time.perf_counter() - started) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    return out


async def split_lag(settings: Settings, written: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Where the lag went, per payment: from the 201 to the projector's write
    (``projected_at`` of its read-model document: relay, Kafka, the projector's reads) and
    from there to the answer (the rest of the transaction, the commit signal or poll, the
    API's read). ``written``: payment id -> (wall time of the 201, of the answer)."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    parts: dict[str, list[float]] = {"201 -> projector's write": [], "projector's write -> answer": []}
    try:
        cols = await MongoReadModel(mongo[settings.mongo_db], cursor_key(settings)).active(fresh=True)
        async for doc in cols.payments.find({"_id": {"$in": [document_id("bench-org", p) for p in written]}},
                                            {"projected_at": 1}):
            t201, answered = written[json.loads(doc["_id"])[1]]
            projected = doc["projected_at"].timestamp()
            parts["201 -> projector's write"].append((projected - t201) * 1000)
            parts["projector's write -> answer"].append((answered - projected) * 1000)
    finally:
        await mongo.close()
    return parts


async def drive(settings: Settings, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    command = f"http://127.0.0.1:{settings.command_api_port}"
    query = f"http://127.0.0.1:{settings.query_api_port}"
    auth = {"Authorization": "Bearer " + mint_token("bench-org", [SCOPE_READ, SCOPE_WRITE], settings=settings)}
    write_ms: list[float] = []
    lag_ms: list[float] = []
    wall.clear()

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        started = time.perf_counter()
        async with http.post(f"{command}/v1/payments", headers=auth,
                             json={"amount": 100 + i, "currency": "EUR", "description": f"bench {i}"}) as resp:
            resp.raise_for_status()
            payment_id = (await resp.json())["id"]
        written, written_at = time.perf_counter(), time.time()
        async with http.get(f"{query}/v1/payments/{payment_id}", params={"min_version": "1"},
                            headers=auth) as read:
            read.raise_for_status()
            await read.read()
        write_ms.append((written - started) * 1000)
        lag_ms.append((time.perf_counter() - written) * 1000)
        wall[payment_id] = (written_at, time.time())

    # aiohttp, not httpx: the load generator's own CPU competes with the system on this
    # 2-core machine, and httpx cost several times more per request (bench/commands.py).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=200)) as http:
        for i in range(5):  # warm up both APIs and the pipeline
            await one(http, -i)
        write_ms.clear()
        lag_ms.clear()
        wall.clear()
        tasks = []
        total = int(rate * seconds)
        begin = time.perf_counter()
        for i in range(total):
            # Open-loop arrivals at a fixed rate: a slow pipeline shows up as lag, not as less load.
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(http, i)))
        await asyncio.gather(*tasks)
    return write_ms, lag_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second (default 20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the load (default 20)")
    parser.add_argument("--kafka-samples", type=int, default=200, help="raw Kafka round trips (default 200)")
    args = parser.parse_args()
    if args.rate * args.seconds > 5000:
        parser.error("bounded load: rate x seconds must stay under 5000 commands")

    settings, env = isolated(Settings(), "bench-visibility", log_level="WARNING")
    system = RunningSystem(settings, Path(tempfile.mkdtemp(prefix="bench-visibility-")))
    print(f"starting the processes (logs in {system.log_dir})…", flush=True)
    system.start(env, timeout=90)
    try:
        print(f"load: {args.rate:g} creates/s for {args.seconds:g} s", flush=True)
        write_ms, lag_ms = asyncio.run(drive(settings, args.rate, args.seconds))
        parts = asyncio.run(split_lag(settings, wall))
        rtt = asyncio.run(kafka_round_trips(settings, args.kafka_samples))
    finally:
        system.stop()
    print(f"{'raw Kafka produce->consume (baseline)':<40} {_pct(rtt)}")
    print(f"{'command latency (POST -> 201)':<40} {_pct(write_ms)}")
    print(f"{'visibility lag (201 -> readable)':<40} {_pct(lag_ms)}")
    for name, ms in parts.items():
        print(f"{'  ' + name:<40} {_pct(ms)}")
    q_rtt, q_lag = statistics.median(rtt), statistics.median(lag_ms)
    print(f"visibility lag p50 / Kafka round trip p50 = {q_lag / q_rtt:.1f}x")


if __name__ == "__main__":
    main()
