"""Benchmark: create throughput through the Kafka intake vs the HTTP command API, same run.

Runs ``payments command-api`` and ``payments intake`` as real processes (each hosting a
command worker, their defaults) on the servers of the environment / ``payments stack
up``, with a scratch PostgreSQL database and private topics and task queue. Then, at the
same ``--concurrency``:

  http          closed loop: POST /v1/payments, next request after the 201 (baseline)
  intake        closed loop: produce a create command, next one after its result is on
                payments.command-results (end to end, as a producer waiting for results)
  intake burst  ``--requests`` commands produced at once; time until every result is
                published (the intake's own parallelism over a partition's backlog),
                for each ``--intake-concurrency`` (1 = one command at a time), then with
                a poll's creates batched into BulkCreatePayments workflows

    payments stack up --detach
    python -m bench.intake --requests 300 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from tempfile import mkdtemp

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.commands import percentile, run_load
from bench.common import scratch_database
from devstack.system import RunningSystem, isolated
from services.command.config import CommandSettings
from shared.auth import SCOPE_WRITE, mint_token
from shared.kafka import topic_partitions


def create_command(org: str) -> tuple[str, bytes, bytes]:
    cid = uuid.uuid4().hex
    pid = f"b-{cid[:16]}"
    value = {"specversion": "1.0", "id": cid, "source": "/bench", "type": "com.gyroscops.payment.command.create",
             "organizationid": org, "subject": pid, "data": {"amount": 1250, "currency": "EUR"}}
    return cid, pid.encode(), json.dumps(value).encode()


class Results:
    """Reads the results topic from the beginning and resolves one future per command id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None

    def expect(self, cid: str) -> asyncio.Future[float]:
        self.waiting[cid] = asyncio.get_running_loop().create_future()
        return self.waiting[cid]

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, self.topic)
            while not tps:  # the intake creates the topic
                await asyncio.sleep(0.1)
                tps = await topic_partitions(consumer, self.topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    for record in records:
                        future = self.waiting.pop(json.loads(record.value)["commandid"], None)
                        if future is not None and not future.done():
                            future.set_result(time.perf_counter())
        finally:
            await consumer.stop()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def intake_closed_loop(producer: AIOKafkaProducer, results: Results, topic: str, org: str, requests: int,
                             concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def loop() -> None:
        for _ in counter:
            cid, key, value = create_command(org)
            done = results.expect(cid)
            started = time.perf_counter()
            await producer.send_and_wait(topic, value, key=key)
            latencies.append(await asyncio.wait_for(done, 60) - started)

    t0 = time.perf_counter()
    await asyncio.gather(*[loop() for _ in range(concurrency)])
    return latencies, time.perf_counter() - t0


async def intake_burst(producer: AIOKafkaProducer, results: Results, topic: str, org: str, requests: int) -> float:
    commands = [create_command(org) for _ in range(requests)]
    futures = [results.expect(cid) for cid, _, _ in commands]
    t0 = time.perf_counter()
    for _, key, value in commands:
        await producer.send(topic, value, key=key)
    await producer.flush()
    await asyncio.wait_for(asyncio.gather(*futures), 120)
    return time.perf_counter() - t0


async def _measure(args: argparse.Namespace, base: CommandSettings,
                   database_url: str) -> list[tuple[str, float, list[float] | None]]:
    # The Kafka client settings are the stack's (stack.json: Tansu's quirks on the embedded broker).
    settings, env = isolated(base, "bench-intake", database_url=database_url, log_level="WARNING")
    system = RunningSystem(settings, Path(mkdtemp(prefix="bench-intake-")))
    token = mint_token("bench-org", [SCOPE_WRITE], settings=settings)
    rows: list[tuple[str, float, list[float] | None]] = []
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=1)
    results = Results(settings.kafka_bootstrap, settings.command_results_topic)
    log: Callable[[str], None] = lambda text: print(f"# {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        log("starting command-api and intake")
        await asyncio.to_thread(system.start, env, timeout=90, names=["command-api", "intake"])
        await producer.start()
        results.start()
        url = f"http://127.0.0.1:{settings.command_api_port}"
        log("warm-up")
        await run_load(url, token, args.warmup, min(4, args.concurrency))
        await intake_closed_loop(producer, results, settings.commands_topic, "bench-org", args.warmup,
                                 min(4, args.concurrency))
        log(f"http: {args.requests} creates at concurrency {args.concurrency}")
        lat, elapsed, errors = await run_load(url, token, args.requests, args.concurrency)
        rows.append(("http (baseline)", len(lat) / elapsed, lat))
        if errors:
            log(f"http errors: {errors}")
        log(f"intake closed loop: {args.requests} creates at concurrency {args.concurrency}")
        lat, elapsed = await intake_closed_loop(producer, results, settings.commands_topic, "bench-org",
                                                args.requests, args.concurrency)
        rows.append(("intake, closed loop", len(lat) / elapsed, lat))
        variants = [{"PAYMENTS_INTAKE_CONCURRENCY": slots} for slots in args.intake_concurrency.split(",")]
        variants.append({"PAYMENTS_INTAKE_BATCH_CREATES": "true"})
        rates: dict[str, list[float]] = {}
        for round_ in range(args.rounds):  # interleaved rounds: a load spike hits every variant alike
            for variant in variants:
                await asyncio.to_thread(system.stop, names=["intake"])
                await asyncio.to_thread(system.start, {**env, **variant}, timeout=90, names=["intake"])
                label = ", ".join(f"{k}={v}" for k, v in variant.items())
                log(f"round {round_ + 1}/{args.rounds}: intake burst of {args.requests} commands, {label}")
                elapsed = await intake_burst(producer, results, settings.commands_topic, "bench-org", args.requests)
                rates.setdefault(label, []).append(args.requests / elapsed)
        for label, values in rates.items():
            rows.append((f"intake, burst backlog, {label} (median of {len(values)})", statistics.median(values),
                         None))
    finally:
        await results.stop()
        await producer.stop()
        await asyncio.to_thread(system.stop)
    return rows


async def main(args: argparse.Namespace) -> None:
    base = CommandSettings()
    async with scratch_database(base.database_url, "payments_bench_intake") as database_url:
        rows = await _measure(args, base, database_url)
    baseline = rows[0][1]
    print(f"{args.requests} creates per row; closed loops at concurrency {args.concurrency}\n")
    print("| variant | creates/s | vs http | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name, rate, lat in rows:
        p50, p99 = (f"{percentile(lat, 0.5):.1f}", f"{percentile(lat, 0.99):.1f}") if lat else ("-", "-")
        print(f"| {name} | {rate:.0f} | {rate / baseline:.2f}x | {p50} | {p99} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="creates per measured row")
    parser.add_argument("--concurrency", type=int, default=16, help="in-flight creates of the closed loops")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--intake-concurrency", default="1,32",
                        help="comma-separated PAYMENTS_INTAKE_CONCURRENCY values for the burst rows")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the burst rows")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
