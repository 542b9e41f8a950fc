"""Benchmark: create-payment over HTTP, naive seed-shaped workflow vs. the command service.

Each variant runs the real command API (same FastAPI app, same idempotency and auth
code) under uvicorn in its own process on 127.0.0.1, with its worker in that process;
only the workflow shape and the Temporal start mode differ:

  naive   three regular activities (validate, execute, publish), regular start
  local   validate in the workflow + one local activity (payment + outbox in one txn)
  eager   local + eager workflow start (API with embedded worker)
  eager+inproc  eager + the result handed over in-process by the local activity once
          committed, instead of a history long-poll (the default configuration)

For each: a latency phase (closed loop, concurrency 1) and a throughput phase (closed
loop, --concurrency). Prints a Markdown table. Uses the servers of the environment /
``payments stack up`` (PAYMENTS_TEMPORAL_ADDRESS, PAYMENTS_DATABASE_URL): it creates
its own PostgreSQL database and task queues and drops the database at the end.

    python -m bench.commands --variants naive,local,eager
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

import httpx

from bench.common import scratch_database
from services.command.config import CommandSettings
from shared.auth import SCOPE_WRITE, mint_token
from shared.net import free_port

_OFF = {"PAYMENTS_COMMAND_EAGER_START": "false", "PAYMENTS_COMMAND_LOCAL_RESULTS": "false"}
VARIANTS = {
    "naive": _OFF,
    "local": _OFF,
    "eager": {"PAYMENTS_COMMAND_EAGER_START": "true", "PAYMENTS_COMMAND_LOCAL_RESULTS": "false"},
    "eager+inproc": {"PAYMENTS_COMMAND_EAGER_START": "true", "PAYMENTS_COMMAND_LOCAL_RESULTS": "true"},
}


# --------------------------------------------------------------------------- server side


async def serve(variant: str, port: int) -> None:
    import uvicorn
    from temporalio.worker import Worker

    from bench.naive_workflow import NaiveActivities, NaiveCreatePaymentWorkflow
    from services.command.bootstrap import command_runtime
    from services.command.commands import CommandResult, CreatePayment
    from services.command.http.app import create_app

    settings = CommandSettings()
    naive = variant == "naive"
    async with command_runtime(settings, embedded_worker=not naive) as runtime:
        app = create_app(runtime=runtime)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        if not naive:
            await server.serve()
            return
        acts = NaiveActivities(runtime.store, settings.event_source)
        runtime.service.routes[CreatePayment] = (NaiveCreatePaymentWorkflow.run, CommandResult)
        async with Worker(runtime.client, task_queue=settings.command_task_queue,
                          workflows=[NaiveCreatePaymentWorkflow],
                          activities=[acts.validate, acts.execute, acts.publish]):
            await server.serve()


# --------------------------------------------------------------------------- load side



async def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready")


async def run_load(url: str, token: str, requests: int, concurrency: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def loop(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in counter:
            started = time.perf_counter()
            response = await http.post("/v1/payments", json={"amount": 1250, "currency": "EUR"}, headers=headers)
            if response.status_code == 201:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[loop(http) for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return latencies, elapsed, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench_variant(variant: str, args: argparse.Namespace, database_url: str, run_id: str) -> dict:
    port = free_port()
    env = {**os.environ, **VARIANTS[variant], "PAYMENTS_DATABASE_URL": database_url,
           "PAYMENTS_COMMAND_TASK_QUEUE": f"bench-{run_id}-{variant}", "PAYMENTS_LOG_LEVEL": "WARNING",
           "PAYMENTS_DATABASE_POOL_SIZE": str(args.pool_size)}
    process = subprocess.Popen([sys.executable, "-m", "bench.commands", "--serve", variant, "--port", str(port)],
                               env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process)
        token = mint_token("bench-org", [SCOPE_WRITE], settings=CommandSettings())
        await run_load(url, token, args.warmup, min(4, args.concurrency))
        lat, _, lat_errors = await run_load(url, token, args.latency_requests, 1)
        thr, elapsed, thr_errors = await run_load(url, token, args.throughput_requests, args.concurrency)
    finally:
        process.terminate()
        process.wait(30)
    return {
        "variant": variant,
        "p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99), "mean": statistics.fmean(lat) * 1000,
        "tput": len(thr) / elapsed, "tp50": percentile(thr, 0.50), "tp99": percentile(thr, 0.99),
        "errors": lat_errors + thr_errors,
    }


async def main(args: argparse.Namespace) -> None:
    settings = CommandSettings()
    run_id = uuid.uuid4().hex[:8]
    results = []
    async with scratch_database(settings.database_url, "payments_bench") as database_url:
        for variant in args.variants.split(","):
            print(f"# {variant} ...", file=sys.stderr, flush=True)
            results.append(await bench_variant(variant, args, database_url, run_id))
    base = next((r for r in results if r["variant"] == "naive"), None)
    print(f"latency: {args.latency_requests} requests at concurrency 1; throughput: "
          f"{args.throughput_requests} requests at concurrency {args.concurrency}\n")
    print("| variant | p50 ms | p99 ms | mean ms | throughput /s | p50 ms under load | p99 ms under load "
          "| p50 vs naive | throughput vs naive | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        speed = f"{base['p50'] / r['p50']:.1f}x lower" if base else "-"
        tput = f"{r['tput'] / base['tput']:.1f}x" if base else "-"
        print(f"| {r['variant']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['mean']:.1f} | {r['tput']:.0f} "
              f"| {r['tp50']:.1f} | {r['tp99']:.1f} | {speed} | {tput} | {r['errors']} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="naive,local,eager,eager+inproc", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--throughput-requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--pool-size", type=int, default=20, help="PostgreSQL pool (and local activity slots)")
    parser.add_argument("--serve", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.port))
    else:
        asyncio.run(main(arguments))
