"""End-to-end projection throughput through Kafka, for bench/projection.py (same events).

The N events are produced to a fresh events topic as the relay produces them (key = the
payment id, value = the CloudEvent JSON, the content-type header, the relay's producer
options), timed: the raw produce rate of the broker. A plain aiokafka consumer then reads
them back (the raw consume rate). Then a real ``payments projector`` process starts
(its own consumer group, joined as a dynamic member, its own MongoDB database,
PAYMENTS_KAFKA_CREATE_TOPICS) on that backlog; its ``/metrics`` counter of projected
events is polled until it reaches N, then the read model is checked to hold all N.
Two times are reported: from the process's start (Python, faust, the group join
included) and from its first projected batch (the steady rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from bench.common import kafka_env
from services.query.adapters.read_model import MongoReadModel
from shared.auth import cursor_key
from shared.events import CONTENT_TYPE, PaymentEvent
from shared.kafka import ensure_topics, event_topics, producer_options
from shared.net import free_port
from shared.settings import Settings

METRIC = "payments_projection_events_total"
POLL_S = 0.025


@dataclass
class EndToEnd:
    events: int
    produce_s: float
    consume_rate: float
    startup_s: float  # projector spawned -> first batch projected
    total_s: float  # projector spawned -> all N projected
    steady_s: float  # first batch projected -> all N projected
    first_batch: int  # events the first observed batch projected
    cpu_s: float  # CPU seconds (user + system) of the projector process over steady_s

    @property
    def steady_rate(self) -> float:
        return (self.events - self.first_batch) / self.steady_s if self.steady_s > 0 else float("nan")


async def produce(settings: Settings, topic: str, events: list[PaymentEvent]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **producer_options(settings))
    await producer.start()
    try:
        headers = [("content-type", CONTENT_TYPE.encode())]
        payloads = [(e.subject.encode(), e.to_json_bytes()) for e in events]  # serialised before timing
        started = time.perf_counter()
        pending = [await producer.send(topic, value=value, key=key, headers=headers) for key, value in payloads]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def consume(settings: Settings, topic: str, n: int) -> float:
    """Records/s a plain consumer reads the ``n`` records at: its partitions assigned by
    hand (no group to join), timed from its first fetch to the last record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.events_topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, time.perf_counter()
        while seen < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000, max_records=5000), 60)
            seen += sum(len(records) for records in batch.values())
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def projected(port: int) -> int:
    """Events the projector has settled (every result label), from its /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(METRIC + "{")))


async def end_to_end(settings: Settings, events: list[PaymentEvent], batch: int, timeout: float = 600) -> EndToEnd:
    n, suffix = len(events), uuid.uuid4().hex[:8]
    run = settings.model_copy(update={"events_topic": f"bench.e2e-{suffix}", "dlq_topic": f"bench.e2e-dlq-{suffix}"})
    db_name, port = f"bench_e2e_{suffix}", free_port()
    await ensure_topics(run.kafka_bootstrap, event_topics(run), create=True)
    produce_s = await produce(run, run.events_topic, events)
    consume_rate = await consume(run, run.events_topic, n)
    env = {**os.environ, **kafka_env(run), "PAYMENTS_EVENTS_TOPIC": run.events_topic,
           "PAYMENTS_DLQ_TOPIC": run.dlq_topic, "PAYMENTS_MONGO_DB": db_name,
           "PAYMENTS_PROJECTOR_GROUP": f"bench-e2e-{suffix}", "PAYMENTS_PROJECTOR_METRICS_PORT": str(port),
           "PAYMENTS_KAFKA_CREATE_TOPICS": "true", "PAYMENTS_LOG_LEVEL": "WARNING"}
    log_path = Path(tempfile.mkdtemp(prefix="bench-e2e-")) / "projector.log"
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    with open(log_path, "wb") as log:
        spawned = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "services.cli", "projector", "--batch-size", str(batch)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first_at, first_batch, done, cpu_first = None, 0, 0, 0.0
        while done < n:
            if child.poll() is not None or time.perf_counter() - spawned > timeout:
                raise RuntimeError(f"projector exited or timed out at {done}/{n}; see {log_path}")
            done = projected(port)
            if done and first_at is None:
                first_at, first_batch, cpu_first = time.perf_counter(), done, cpu_seconds(child.pid)
            await asyncio.sleep(POLL_S if done < n else 0)
        finished = time.perf_counter()
        cpu = cpu_seconds(child.pid) - cpu_first
        cols = await MongoReadModel(mongo[db_name], cursor_key(settings)).active(fresh=True)
        stored = await cols.payments.count_documents({})
        if stored != n:
            raise RuntimeError(f"projector settled {n} events but the read model holds {stored}; see {log_path}")
        assert first_at is not None
        return EndToEnd(n, produce_s, consume_rate, first_at - spawned, finished - spawned, finished - first_at,
                        first_batch, cpu)
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        await mongo.drop_database(db_name)
        await mongo.close()
        await drop_topics(run)


async def drop_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics([settings.events_topic, settings.dlq_topic])
    with contextlib.suppress(Exception):
        await admin.close()


def report(e2e: EndToEnd, apply_rate: float, raw_rate: float) -> list[str]:
    n, total_rate = e2e.events, e2e.events / e2e.total_s
    steady = e2e.steady_rate

    def ratios(rate: float) -> str:
        return f"= {100 * rate / apply_rate:.0f} % of apply_batch, {100 * rate / raw_rate:.0f} % of baseline"

    return [
        f"raw Kafka produce (relay's options)     : {n / e2e.produce_s:9.0f} events/s  (context)",
        f"raw Kafka consume (plain aiokafka)      : {e2e.consume_rate:9.0f} events/s  (context)",
        f"end to end, from projector start        : {total_rate:9.0f} events/s  {ratios(total_rate)}"
        f"   ({e2e.total_s:.2f} s, of which {e2e.startup_s:.2f} s to the first batch)",
        f"end to end, from first projected batch  : {steady:9.0f} events/s  {ratios(steady)}"
        f"   ({n - e2e.first_batch} events in {e2e.steady_s:.2f} s)",
        f"projector CPU from its first batch      : {e2e.cpu_s:.2f} s in {e2e.steady_s:.2f} s "
        f"({100 * e2e.cpu_s / e2e.steady_s:.0f} % of one core)",
        "load average (1, 5, 15 min)             : " + " ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
