"""Benchmark: what tracing costs a create over HTTP, in the same run (issue 25).

Three command APIs run side by side, each the real app with its embedded worker and the
defaults (eager start, group commit), logging JSON lines at INFO as a process does:

  none  no instrumentation at all: shared/tracing.py's hooks replaced by inert stand-ins
        before the app is imported, and no tracing set-up
  off   as shipped, without OTEL_EXPORTER_OTLP_ENDPOINT: the set-up reads the environment
        and installs nothing (what every deployment that does not trace runs)
  on    OTEL_EXPORTER_OTLP_ENDPOINT set to a sink in this process: every span of every
        create exported over OTLP/HTTP (sampler always_on)

Each variant runs as --processes server processes (two by default). Latency at concurrency
1 interleaves every server request by request, so that a load change of the shared machine
hits them alike: p50 and p99 of each variant, the p50 ratio to ``none`` with a 95 %
bootstrap interval, and the same ratio between two ``none`` processes, an A/A row that
shows what two identical processes differ by on this machine. Throughput: closed loops at
--concurrency, one variant after the other in rounds, the median of the rounds and of each
round's ratio to its ``none``.
Uses the servers of the environment / ``payments stack up`` (Temporal, PostgreSQL: its
own scratch database and task queues).

    python -m bench.tracing --processes 2 --latency-requests 800 --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp

VARIANTS = ("none", "off", "on")


def _inert_hooks() -> None:
    """``none``: every hook the wings call does nothing, before any of them imports it."""
    from shared import tracing

    def nothing(*args: Any, **kwargs: Any) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    inert: dict[str, Any] = {
        "with_trace": lambda model: model, "exemplar": lambda: None, "log_ids": dict,
        "temporal_interceptors": list, "current_carrier": dict, "cloudevent_carrier": lambda raw: {},
        "record_carrier": lambda headers, raw: {},
        "fastapi_telemetry": lambda **_: {"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        "processing_spans": lambda name, messages: contextlib.nullcontext([None] * len(messages)),
        **{name: nothing for name in ("resumed", "untraced", "batch_span", "consumer_span", "span")},
    }
    for name, stand_in in inert.items():
        assert hasattr(tracing, name), name
        setattr(tracing, name, stand_in)


async def serve(variant: str, port: int) -> None:
    if variant == "none":
        _inert_hooks()
    import uvicorn

    from services.command.bootstrap import command_runtime
    from services.command.config import CommandSettings
    from services.command.entrypoints.http.app import create_app
    from shared.telemetry import configure_logging
    from shared.tracing_setup import start_tracing

    settings = CommandSettings()
    configure_logging(settings.log_level, settings.log_json)
    if variant != "none":
        assert start_tracing("command-api") == (variant == "on")
    async with command_runtime(settings, embedded_worker=True) as runtime:
        server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False, lifespan="off"))
        await server.serve()


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    """Accepts OTLP/HTTP exports and drops them (what a collector costs is not ours)."""
    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start(variant: str, database_url: str, run_id: str, sink: str) -> tuple[subprocess.Popen[bytes], str]:
    from shared.net import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PAYMENTS_DATABASE_URL=database_url, PAYMENTS_COMMAND_TASK_QUEUE=f"bench-{run_id}-{variant}",
               PAYMENTS_LOG_LEVEL="INFO", PAYMENTS_LOG_JSON="true")
    if variant == "on":
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink, OTEL_TRACES_SAMPLER="always_on")
    process = subprocess.Popen([sys.executable, "-m", "bench.tracing", "--serve", variant, "--port", str(port)],
                               env=env, stderr=subprocess.DEVNULL)  # the JSON log lines are formatted, then dropped
    return process, f"http://127.0.0.1:{port}"


async def _one_create(http: aiohttp.ClientSession, url: str, token: str) -> float:
    started = time.perf_counter()
    async with http.post(f"{url}/v1/payments", json={"amount": 1250, "currency": "EUR"},
                         headers={"Authorization": f"Bearer {token}"}) as response:
        await response.read()
        assert response.status == 201, response.status
    return (time.perf_counter() - started) * 1000


async def latencies(urls: dict[tuple[str, int], str], token: str, n: int) -> dict[tuple[str, int], list[float]]:
    """Concurrency 1, interleaved request by request over every server (the first of each
    turn rotates): a load change of the shared machine hits them all alike."""
    found: dict[tuple[str, int], list[float]] = {key: [] for key in urls}
    order = list(urls)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for i in range(n):
            for key in order[i % len(order):] + order[:i % len(order)]:
                found[key].append(await _one_create(http, urls[key], token))
    return found


async def run(args: argparse.Namespace) -> tuple[dict[tuple[str, int], list[float]], list[dict[str, Any]]]:
    from bench.commands import _wait_ready, run_load
    from bench.common import scratch_database
    from services.command.config import CommandSettings
    from shared.auth import SCOPE_WRITE, mint_token

    settings = CommandSettings()
    token = mint_token("bench-org", [SCOPE_WRITE], settings=settings)
    run_id = uuid.uuid4().hex[:8]
    loaded: list[dict[str, Any]] = []
    async with scratch_database(settings.database_url, "payments_bench") as database_url:
        with otlp_sink() as sink:
            servers = {(v, k): start(v, database_url, f"{run_id}-{k}", sink)
                       for k in range(args.processes) for v in VARIANTS}
            try:
                for process, url in servers.values():
                    await _wait_ready(url, process)
                    await run_load(url, token, args.warmup, 4)
                urls = {key: url for key, (_, url) in servers.items()}
                single = await latencies(urls, token, args.latency_requests)
                for n in range(args.rounds):  # throughput: closed loops, one server at a time
                    for variant in (VARIANTS if n % 2 == 0 else VARIANTS[::-1]):
                        url = urls[variant, n % args.processes]
                        lat, elapsed, errors = await run_load(url, token, args.requests, args.concurrency)
                        loaded.append({"variant": variant, "round": n, "tput": len(lat) / elapsed, "errors": errors,
                                       "p50": statistics.median(lat) * 1000})
            finally:
                for process, _ in servers.values():
                    process.terminate()
                for process, _ in servers.values():
                    process.wait(30)
    return single, loaded


def _interval(base: list[float], other: list[float], resamples: int = 1000) -> tuple[float, float]:
    """95 % bootstrap interval of median(other) / median(base)."""
    rng = random.Random(7)
    ratios = sorted(statistics.median(rng.choices(other, k=len(other))) /
                    statistics.median(rng.choices(base, k=len(base))) for _ in range(resamples))
    return ratios[int(resamples * 0.025)], ratios[int(resamples * 0.975)]


def _row(name: str, ms: list[float], base: list[float] | None) -> str:
    ms = sorted(ms)
    versus = interval = "-"
    if base is not None:
        low, high = _interval(base, ms)
        versus = f"{(statistics.median(ms) / statistics.median(base) - 1) * 100:+.1f} %"
        interval = f"{(low - 1) * 100:+.1f} .. {(high - 1) * 100:+.1f} %"
    return f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | {ms[int(len(ms) * 0.99)]:.2f} | {versus} | {interval} |"


def report(args: argparse.Namespace, single: dict[tuple[str, int], list[float]], loaded: list[dict[str, Any]]) -> None:
    pooled = {v: [ms for (variant, _), values in single.items() if variant == v for ms in values] for v in VARIANTS}
    print(f"concurrency 1: {args.processes} server processes per variant, {args.latency_requests} creates each, "
          "interleaved request by request; p50 ratio to none with its 95 % bootstrap interval\n")
    print("| variant | creates | p50 ms | p99 ms | p50 vs none | 95 % interval |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        print(_row(variant, pooled[variant], None if variant == "none" else pooled["none"]))
    for k in range(1, args.processes):  # A/A: what two identical processes differ by (the noise floor)
        print(_row(f"none #{k + 1} vs none #1", single["none", k], single["none", 0]))
    print(f"\nconcurrency {args.concurrency}: {args.requests} creates per step, median of {args.rounds} interleaved "
          "rounds, and of each round's ratio to that round's none\n")
    print("| variant | creates/s | p50 ms | errors | creates/s vs none | p50 vs none |")
    print("|---|---|---|---|---|---|")
    by_round = {(s["variant"], s["round"]): s for s in loaded}
    for variant in VARIANTS:
        mine = [s for s in loaded if s["variant"] == variant]
        ratio = {k: statistics.median(s[k] / by_round["none", s["round"]][k] for s in mine) for k in ("tput", "p50")}
        print(f"| {variant} | {statistics.median(s['tput'] for s in mine):.0f} "
              f"| {statistics.median(s['p50'] for s in mine):.2f} | {sum(s['errors'] for s in mine)} "
              f"| {(ratio['tput'] - 1) * 100:+.1f} % | {(ratio['p50'] - 1) * 100:+.1f} % |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2,
                        help="server processes per variant (two: an A/A row shows the noise floor)")
    parser.add_argument("--latency-requests", type=int, default=800,
                        help="creates per server process at concurrency 1 (interleaved one by one)")
    parser.add_argument("--concurrency", type=int, default=8, help="the closed loop of the throughput rounds")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds; the report is their median")
    parser.add_argument("--requests", type=int, default=300, help="creates per throughput step")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.port))
    else:
        report(arguments, *asyncio.run(run(arguments)))
