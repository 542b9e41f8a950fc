"""The Kafka benchmarks on each broker in the same run: Apache Kafka and the PyPI broker
noida-db (and Tansu if asked), each a private broker beside the other servers of the
running stack. Per broker, its raw produce -> consume round trip is the baseline, then:

* bench/projector_latency: a lone event produced -> readable in the read model (the
  project's default consumer settings);
* bench/visibility: write-to-read lag (201 -> readable) under a steady create load,
  through every process of the system;
* bench/projection's end to end: a backlog through a real projector, beside the
  broker's raw consume rate (the projector is bound by MongoDB, not by the broker).

Each process runs with what the local stack gives it on that broker (stack.json's
settings; static group ids on noida-db only), as ``payments up`` would.

    payments stack up --detach
    python -m bench.kafka_brokers --brokers apache,noida
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
from pathlib import Path

from bench.projection import make_events
from bench.projection_e2e import end_to_end
from bench.projector_latency import measure
from bench.visibility import drive, kafka_round_trips
from devstack import LocalStack
from devstack.brokers import KAFKA_BROKERS
from devstack.system import RunningSystem, isolated
from shared.settings import Settings


def _p50(ms: list[float]) -> float:
    return statistics.median(ms)


def _p99(ms: list[float]) -> float:
    return statistics.quantiles(ms, n=100)[98]


async def _on(settings: Settings, broker: str, args: argparse.Namespace) -> dict[str, float]:
    rtt = await kafka_round_trips(settings, args.kafka_samples)
    lone = await measure(settings, settings.kafka_fetch_max_wait_ms, 0.0, args.events)
    e2e = await end_to_end(settings, make_events(args.backlog), 500)
    return {"rtt p50": _p50(rtt), "rtt p99": _p99(rtt), "lone p50": _p50(lone), "lone p99": _p99(lone),
            "consume/s": e2e.consume_rate, "projector/s": e2e.steady_rate}


def _visibility(settings: Settings, static: bool, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    kafka = {name: getattr(settings, name) for name in Settings.model_fields if name.startswith("kafka_")}
    run, env = isolated(settings, "bench-brokers", log_level="WARNING", **{k: v for k, v in kafka.items() if v is not None})
    system = RunningSystem(run, Path(tempfile.mkdtemp(prefix="bench-brokers-")), static_members=static)
    system.start(env, timeout=120)
    try:
        return asyncio.run(drive(run, args.rate, args.seconds))
    finally:
        system.stop()


def one_broker(broker: str, base: Settings, args: argparse.Namespace) -> dict[str, float]:
    servers = {"database_url": base.database_url, "redis_url": base.redis_url, "mongo_url": base.mongo_url,
               "temporal_address": base.temporal_address}
    stack = LocalStack(Path(tempfile.mkdtemp(prefix=f"bench-{broker}-")), headless=True, write_stack_file=False,
                       kafka_broker=broker, **servers)
    endpoints = stack.start()
    try:
        settings = base.model_copy(update={"kafka_bootstrap": endpoints.kafka_bootstrap, **endpoints.client_settings})
        print(f"{broker}: Kafka at {endpoints.kafka_bootstrap} (settings {endpoints.client_settings})", flush=True)
        row = asyncio.run(_on(settings, broker, args))
        write_ms, lag_ms = _visibility(settings, stack.static_members, args)
        row.update({"201 p50": _p50(write_ms), "lag p50": _p50(lag_ms), "lag p99": _p99(lag_ms)})
        return row
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="apache,noida", help=f"comma-separated, of {', '.join(KAFKA_BROKERS)}")
    parser.add_argument("--kafka-samples", type=int, default=200, help="raw round trips per broker (default 200)")
    parser.add_argument("--events", type=int, default=40, help="lone events per broker (default 40)")
    parser.add_argument("--backlog", type=int, default=2000, help="events of the end-to-end backlog (default 2000)")
    parser.add_argument("--rate", type=float, default=20.0, help="creates/s of the visibility load (default 20)")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of visibility load (default 15)")
    args = parser.parse_args()
    brokers = [b for b in args.brokers.split(",") if b]
    if unknown := [b for b in brokers if b not in KAFKA_BROKERS]:
        parser.error(f"unknown broker(s) {', '.join(unknown)}")
    if args.rate * args.seconds > 2000 or args.backlog > 10_000 or not 2 <= args.events <= 500:
        parser.error("bounded load: rate x seconds <= 2000, backlog <= 10000, 2 <= events <= 500")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # its warnings while topics and groups appear
    base = Settings()
    rows = {broker: one_broker(broker, base, args) for broker in brokers}
    print(f"\n{'broker':<8} {'raw RTT p50/p99 ms':>19} {'lone event p50/p99 ms':>22} {'(x RTT)':>8} "
          f"{'201->readable p50/p99 ms':>25} {'(x RTT)':>8} {'raw consume ev/s':>17} {'projector ev/s':>15}")
    for broker, r in rows.items():
        print(f"{broker:<8} {r['rtt p50']:>9.1f} /{r['rtt p99']:>7.1f}  {r['lone p50']:>10.1f} /{r['lone p99']:>8.1f}  "
              f"{r['lone p50'] / r['rtt p50']:>7.1f}x {r['lag p50']:>13.1f} /{r['lag p99']:>8.1f}  "
              f"{r['lag p50'] / r['rtt p50']:>7.1f}x {r['consume/s']:>17.0f} {r['projector/s']:>15.0f}")
    print(f"(visibility load {args.rate:g} creates/s for {args.seconds:g} s; command latency p50: "
          + ", ".join(f"{b} {r['201 p50']:.1f} ms" for b, r in rows.items()) + ")")


if __name__ == "__main__":
    main()
