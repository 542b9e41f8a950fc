"""What PAYMENTS_KAFKA_EMPTY_FETCH_PAUSE_MS costs and saves on the stack's broker: for each
pause, an idle group consumer's CPU and fetches per second, then the produce -> consume
time of records sent one at a time; pause 0 (no pacing) is the baseline of the same run.

On Kafka, which holds an empty fetch for fetch_max_wait_ms, every pause measures the
same; on noida-db, which answers it at once, pause 0 is a busy loop.

    payments stack up --detach
    python -m bench.empty_fetch_pause --pauses 0,2,5,10
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
import uuid

from aiokafka import AIOKafkaProducer

from shared.kafka import TopicSpec, ensure_topics, group_consumer
from shared.settings import Settings


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(base: Settings, pause_ms: int, idle_seconds: float, records: int) -> tuple[float, float, float]:
    """(idle CPU in % of a core, idle fetches/s, produce -> consume p50 in ms)."""
    topic = f"bench.pause-{uuid.uuid4().hex[:8]}"
    await ensure_topics(base.kafka_bootstrap, [TopicSpec(topic, 1, 1, 1)], create=True)
    settings = base.model_copy(update={"kafka_empty_fetch_pause_ms": pause_ms})
    consumer = group_consumer(settings, topic, group_id=f"g-{topic}", auto_offset_reset="earliest")
    fetches = 0
    send = consumer._client.send

    async def counted(node_id, request, *args, **kwargs):  # noqa: ANN001, ANN202
        nonlocal fetches
        fetches += type(request).__name__ == "FetchRequest"
        return await send(node_id, request, *args, **kwargs)

    consumer._client.send = counted
    producer = AIOKafkaProducer(bootstrap_servers=base.kafka_bootstrap)
    await producer.start()
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=3000)  # joined, nothing to read
        fetches, cpu, started = 0, _cpu_seconds(), time.monotonic()
        while time.monotonic() - started < idle_seconds:
            await consumer.getmany(timeout_ms=500)
        elapsed = time.monotonic() - started
        idle_cpu, idle_fetches = (_cpu_seconds() - cpu) / elapsed * 100, fetches / elapsed
        latencies = []
        for i in range(records):
            await asyncio.sleep(0.013)  # a record lands at a random point of the pause
            sent = time.perf_counter()
            await producer.send_and_wait(topic, str(i).encode())
            while not await consumer.getmany(timeout_ms=1000):
                pass
            latencies.append((time.perf_counter() - sent) * 1000)
        return idle_cpu, idle_fetches, statistics.median(latencies)
    finally:
        await consumer.stop()
        await producer.stop()


async def run(pauses: list[int], idle_seconds: float, records: int) -> None:
    base = Settings()
    print(f"broker {base.kafka_bootstrap}; idle {idle_seconds:g} s, then {records} records one at a time")
    print("| pause | idle CPU (% of a core) | idle fetches/s | produce -> consume p50 |")
    print("|---|---|---|---|")
    for pause in pauses:
        cpu, fetches, p50 = await measure(base, pause, idle_seconds, records)
        print(f"| {pause} ms | {cpu:.1f} | {fetches:.0f} | {p50:.2f} ms |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", default="0,2,5,10", help="pauses in ms, 0 first as the baseline")
    parser.add_argument("--idle-seconds", type=float, default=4.0, help="idle time measured per pause")
    parser.add_argument("--records", type=int, default=40, help="records timed per pause")
    args = parser.parse_args()
    asyncio.run(run([int(p) for p in args.pauses.split(",")], args.idle_seconds, args.records))


if __name__ == "__main__":
    main()
