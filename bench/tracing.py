"""Benchmark: what tracing costs a create over HTTP, in the same run (issue 25).

Three command APIs run side by side, each the real app with its embedded worker and the
defaults (eager start, group commit), logging JSON lines at INFO as a process does:

  none  no instrumentation at all: shared/tracing.py's hooks replaced by inert stand-ins
        before the app is imported, and no tracing set-up
  off   as shipped, without OTEL_EXPORTER_OTLP_ENDPOINT: the set-up reads the environment
        and installs nothing (what every deployment that does not trace runs)
  on    OTEL_EXPORTER_OTLP_ENDPOINT set to a sink in this process: every span of every
        create exported over OTLP/HTTP (sampler always_on)

Each round measures the three back to back at each concurrency of --sweep (closed loop),
so that a load change of the shared machine hits them alike; the report is the median of
the rounds and each variant's ratio to ``none``. Uses the servers of the environment /
``payments stack up`` (Temporal, PostgreSQL: its own scratch database and task queues).

    python -m bench.tracing --rounds 5 --sweep 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.commands import _wait_ready, percentile, run_load
    from bench.common import scratch_database
    from services.command.config import CommandSettings
    from shared.auth import SCOPE_WRITE, mint_token

    settings = CommandSettings()
    token = mint_token("bench-org", [SCOPE_WRITE], settings=settings)
    run_id = uuid.uuid4().hex[:8]
    steps: list[dict[str, Any]] = []
    async with scratch_database(settings.database_url, "payments_bench") as database_url:
        with otlp_sink() as sink:
            servers = {v: start(v, database_url, run_id, sink) for v in VARIANTS}
            try:
                for process, url in servers.values():
                    await _wait_ready(url, process)
                    await run_load(url, token, args.warmup, 4)
                for n in range(args.rounds):
                    for concurrency in args.sweep:
                        for variant in (VARIANTS if n % 2 == 0 else VARIANTS[::-1]):  # alternate who goes first
                            requests = args.latency_requests if concurrency == 1 else args.requests
                            lat, elapsed, errors = await run_load(servers[variant][1], token, requests, concurrency)
                            steps.append({"variant": variant, "c": concurrency, "tput": len(lat) / elapsed,
                                          "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "errors": errors})
                            print(f"#   round {n + 1} {variant} c={concurrency}: p50 {steps[-1]['p50']:.2f} ms",
                                  file=sys.stderr, flush=True)
            finally:
                for process, _ in servers.values():
                    process.terminate()
                for process, _ in servers.values():
                    process.wait(30)
    return steps


def report(args: argparse.Namespace, steps: list[dict[str, Any]]) -> None:
    rows = {}
    for (variant, concurrency) in {(s["variant"], s["c"]) for s in steps}:
        runs = [s for s in steps if (s["variant"], s["c"]) == (variant, concurrency)]
        rows[variant, concurrency] = {k: statistics.median(r[k] for r in runs) for k in ("tput", "p50", "p99")}
        rows[variant, concurrency]["errors"] = sum(r["errors"] for r in runs)
    print(f"closed loop, median of {args.rounds} interleaved rounds; {args.latency_requests} creates at "
          f"concurrency 1, {args.requests} at each other step\n")
    print("| variant | concurrency | creates/s | p50 ms | p99 ms | errors | p50 vs none | creates/s vs none |")
    print("|---|---|---|---|---|---|---|---|")
    for concurrency in args.sweep:
        base = rows["none", concurrency]
        for variant in VARIANTS:
            r = rows[variant, concurrency]
            print(f"| {variant} | {concurrency} | {r['tput']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} "
                  f"| {(r['p50'] / base['p50'] - 1) * 100:+.1f} % | {(r['tput'] / base['tput'] - 1) * 100:+.1f} % |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=lambda text: [int(c) for c in text.split(",")], default=[1, 8],
                        help="closed-loop concurrencies, one step each per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the report is their median")
    parser.add_argument("--latency-requests", type=int, default=200, help="creates of a concurrency-1 step")
    parser.add_argument("--requests", type=int, default=300, help="creates of every other step")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.port))
    else:
        report(arguments, asyncio.run(run(arguments)))
