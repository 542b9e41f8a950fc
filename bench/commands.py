"""Benchmark: create-payment over HTTP, naive seed-shaped workflow vs. the command service.

Each variant runs the real command API (same FastAPI app, same idempotency and auth
code) under uvicorn in its own process on 127.0.0.1, with its worker in that process;
only the workflow shape and the Temporal start mode differ:

  naive   three regular activities (validate, execute, publish), regular start
  local   validate in the workflow + one local activity (payment + outbox in one txn)
  eager   local + eager workflow start (API with embedded worker)
  eager+inproc  eager + the result handed over in-process by the local activity once
          committed, instead of a history long-poll (the default before issue 14)
  group-commit  eager+inproc + group commit: commands arriving while one execution is in
          flight run as one batch workflow / one transaction (the default since issue 14)

NAME/expiry and NAME/expiry-<shape>: NAME's server, creates with ``expires_at`` (bench/expiry_timers.py).

All variants' servers run side by side; each step of a closed-loop sweep over --sweep
concurrencies (1, 8, 32, 64) measures them back to back, reporting
creates/s, p50/p99 and the CPU of each process (API, Temporal server, PostgreSQL, this
load generator) to name the bottleneck of every step, then the ratios against
eager+inproc and naive at each concurrency. Uses the servers of the environment /
``payments stack up`` (PAYMENTS_TEMPORAL_ADDRESS, PAYMENTS_DATABASE_URL): it creates
its own PostgreSQL database and task queues and drops the database at the end.

    python -m bench.commands --variants naive,eager+inproc,group-commit --sweep 1,8,32,64
    python -m bench.commands --variants group-commit,group-commit/expiry --sweep 32 --rounds 9 --requests 400

``--baseline DIR`` also serves each variant from another checkout (e.g. a ``git worktree``
of the parent commit) on a scratch database of its own, side by side: ``base:<variant>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import httpx

from bench.common import medians, ratio, scratch_database
from bench.cpu import CpuSample, bottleneck, listening_pid
from bench.expiry_timers import DEADLINE_AHEAD, print_expiry_ratios, swap_timers, timers_env
from services.command.config import CommandSettings
from shared.auth import SCOPE_WRITE, mint_token
from shared.net import free_port

_NO_GC = {"PAYMENTS_COMMAND_GROUP_COMMIT": "false"}
_OFF = {"PAYMENTS_COMMAND_EAGER_START": "false", "PAYMENTS_COMMAND_LOCAL_RESULTS": "false", **_NO_GC}
_INPROC = {"PAYMENTS_COMMAND_EAGER_START": "true", "PAYMENTS_COMMAND_LOCAL_RESULTS": "true"}
VARIANTS = {
    "naive": _OFF,
    "local": _OFF,
    "eager": {"PAYMENTS_COMMAND_EAGER_START": "true", "PAYMENTS_COMMAND_LOCAL_RESULTS": "false", **_NO_GC},
    "eager+inproc": {**_INPROC, **_NO_GC},
    "group-commit": {**_INPROC, "PAYMENTS_COMMAND_GROUP_COMMIT": "true"},
    # without holding the queue after a batch (PAYMENTS_COMMAND_GROUP_COMMIT_MAX_HOLD_SECONDS=0)
    "group-commit-nohold": {**_INPROC, "PAYMENTS_COMMAND_GROUP_COMMIT": "true",
                            "PAYMENTS_COMMAND_GROUP_COMMIT_MAX_HOLD_SECONDS": "0"},
}
# Variants with their own settings, e.g. "group-commit@2" = two executions in flight.
IN_FLIGHT = "PAYMENTS_COMMAND_GROUP_COMMIT_IN_FLIGHT"


def variant_env(variant: str) -> dict[str, str]:
    server, _, load = variant.partition("/")
    base, _, in_flight = server.partition("@")
    return {**VARIANTS[base], **({IN_FLIGHT: in_flight} if in_flight else {}), **timers_env(load)}


# --------------------------------------------------------------------------- server side


async def serve(variant: str, port: int) -> None:
    import uvicorn
    from temporalio.worker import Worker

    from bench.naive_workflow import NaiveActivities, NaiveCreatePaymentWorkflow
    from services.command.bootstrap import command_runtime
    from services.command.commands import CommandResult, CreatePayment
    from services.command.entrypoints.http.app import create_app
    from services.command.temporal.registry import Route

    settings = CommandSettings()
    swap_timers()
    naive = variant == "naive"  # the other variants differ only in their PAYMENTS_* environment
    async with command_runtime(settings, embedded_worker=not naive) as runtime:
        app = create_app(runtime=runtime)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        if not naive:
            await server.serve()
            return
        acts = NaiveActivities(runtime.store, settings.event_source)
        client = getattr(runtime.commands, "client", runtime.commands)  # group commit wraps the client
        client.routes[CreatePayment] = Route(CreatePayment, NaiveCreatePaymentWorkflow, CommandResult)
        async with Worker(runtime.temporal, task_queue=settings.command_task_queue,
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


async def run_load(url: str, token: str, requests: int, concurrency: int,
                   expiring: bool = False) -> tuple[list[float], float, int]:
    """Closed loop: ``concurrency`` clients send creates back to back. aiohttp, not httpx:
    httpx's connection pool cost ~8 ms of CPU per request at 64 connections here, which
    made the load generator the bottleneck of the machine (docs/benchmarks.md)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    headers = {"Authorization": f"Bearer {token}"}
    body = {"amount": 1250, "currency": "EUR"}

    async def loop(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in counter:
            if expiring:  # each its own deadline, as with PAYMENTS_PAYMENT_DEFAULT_TTL_SECONDS
                body["expires_at"] = (datetime.now(UTC) + DEADLINE_AHEAD).isoformat()
            started = time.perf_counter()
            try:
                async with http.post(f"{url}/v1/payments", json=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 201
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[loop(http) for _ in range(concurrency)])
        elapsed = time.perf_counter() - t0
    return latencies, elapsed, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Server:
    """One variant's command API process."""

    variant: str
    process: subprocess.Popen
    url: str
    cpu: CpuSample


BASE = "base:"  # a variant served by the --baseline checkout
def start_server(variant: str, args: argparse.Namespace, database_url: str, run_id: str,
                 tree: str | None = None) -> Server:  # tree: the checkout serving it
    port = free_port()
    name = variant.removeprefix(BASE)
    env = {**os.environ, **variant_env(name), "PAYMENTS_DATABASE_URL": database_url,
           "PAYMENTS_COMMAND_TASK_QUEUE": f"bench-{run_id}-{variant.replace(':', '-')}",
           "PAYMENTS_LOG_LEVEL": "WARNING", "PAYMENTS_DATABASE_POOL_SIZE": str(args.pool_size),
           **({"PYTHONPATH": tree} if tree else {})}
    process = subprocess.Popen([sys.executable, "-m", "bench.commands", "--serve",
                                name.partition("@")[0].partition("/")[0], "--port", str(port)], env=env, cwd=tree)
    temporal_port = int(CommandSettings().temporal_address.rsplit(":", 1)[1])
    cpu = CpuSample({"api": process.pid, "temporal": listening_pid(temporal_port), "postgres": None,
                     "loadgen": os.getpid()})
    return Server(variant, process, f"http://127.0.0.1:{port}", cpu)


async def measure(server: Server, token: str, requests: int, concurrency: int) -> dict:
    server.cpu.start()
    lat, elapsed, errors = await run_load(server.url, token, requests, concurrency, "/" in server.variant)
    shares = server.cpu.stop()
    print(f"#   {server.variant} c={concurrency}: {len(lat) / elapsed:.0f}/s", file=sys.stderr, flush=True)
    return {"variant": server.variant, "c": concurrency, "tput": len(lat) / elapsed, "p50": percentile(lat, 0.50),
            "p99": percentile(lat, 0.99), "errors": errors, "cpu": shares}


async def sweep(args: argparse.Namespace, database_url: str, run_id: str, base_url: str | None = None) -> list[dict]:
    """Every variant's server runs for the whole sweep; each concurrency step measures the
    variants back to back, so that a load change of the shared machine hits them alike."""
    servers = [start_server(v, args, database_url, run_id) for v in args.variants.split(",")]
    if base_url is not None:
        servers += [start_server(BASE + v, args, base_url, run_id, args.baseline) for v in args.variants.split(",")]
    token = mint_token("bench-org", [SCOPE_WRITE], settings=CommandSettings())
    steps = []
    try:
        for server in servers:
            await _wait_ready(server.url, server.process)
            await run_load(server.url, token, args.warmup, min(4, max(args.sweep)), "/" in server.variant)
        for _ in range(args.rounds):
            for concurrency in args.sweep:
                for server in servers:
                    requests = args.latency_requests if concurrency == 1 else args.requests
                    steps.append(await measure(server, token, requests, concurrency))
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(30)
    return steps


async def main(args: argparse.Namespace) -> None:
    settings = CommandSettings()
    run_id = uuid.uuid4().hex[:8]
    async with contextlib.AsyncExitStack() as stack:
        db_url, base_url = [await stack.enter_async_context(scratch_database(settings.database_url, f"payments_{p}"))
                            if p == "bench" or args.baseline else None for p in ("bench", "bench_base")]
        steps = medians(await sweep(args, db_url, run_id, base_url))
    order = args.variants.split(",") + [BASE + v for v in args.variants.split(",")]
    print(f"closed loop; {args.latency_requests} requests at concurrency 1, {args.requests} at each other step; "
          f"median of {args.rounds} interleaved round(s); CPU in % of one core (machine: % of all cores)\n")
    print("| variant | concurrency | creates/s | p50 ms | p99 ms | errors | CPU api | CPU temporal | CPU postgres "
          "| CPU loadgen | machine | bottleneck |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(steps, key=lambda step: order.index(step["variant"])):
        c = r["cpu"]
        print(f"| {r['variant']} | {r['c']} | {r['tput']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} "
              f"| {c['api']:.0f} | {c['temporal']:.0f} | {c['postgres']:.0f} | {c['loadgen']:.0f} "
              f"| {c['machine']:.0f} | {bottleneck(c)} |")
    by = {(r["variant"], r["c"]): r for r in steps}
    if args.baseline:
        print("\n| variant | concurrency | creates/s vs base | p50 vs base | p99 vs base |\n|---|---|---|---|---|")
        for r in (by[(v, c)] for v in args.variants.split(",") for c in args.sweep):
            ratios = (f"{r[k] / by[(BASE + r['variant'], r['c'])][k]:.3f}" for k in ("tput", "p50", "p99"))
            print(f"| {r['variant']} | {r['c']} | {' | '.join(ratios)} |")
    expiring = print_expiry_ratios(by, [v for v in args.variants.split(",") if "/" in v], args.sweep)
    others = [v for v in order if v not in ("naive", "eager+inproc", *expiring)]
    if not {"naive", "eager+inproc"} & set(order):
        return
    print("\n| variant | concurrency | creates/s vs eager+inproc | creates/s vs naive | p50 vs eager+inproc |\n"
          "|---|---|---|---|---|")
    for variant in others:
        for concurrency in args.sweep:
            r, base, naive = by[(variant, concurrency)], by.get(("eager+inproc", concurrency)), by.get(("naive", concurrency))
            print(f"| {variant} | {concurrency} | {ratio(r['tput'], base['tput']) if base else '-'} "
                  f"| {ratio(r['tput'], naive['tput']) if naive else '-'} "
                  f"| {ratio(r['p50'], base['p50']) if base else '-'} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="naive,eager+inproc,group-commit",
                        help="comma-separated: " + ", ".join(VARIANTS) + " (NAME@N: N executions in flight; "
                        "NAME/expiry[-SHAPE]: creates with expires_at, bench/expiry_timers.py)")
    parser.add_argument("--sweep", type=lambda text: [int(c) for c in text.split(",")], default=[1, 8, 32, 64],
                        help="closed-loop concurrencies, one step each")
    parser.add_argument("--latency-requests", type=int, default=150, help="requests of the concurrency-1 step")
    parser.add_argument("--requests", type=int, default=300, help="requests of every other step")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sweep; report the median")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--pool-size", type=int, default=20, help="PostgreSQL pool (and local activity slots)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also serve every variant from this checkout (e.g. a git worktree of the parent commit)")
    parser.add_argument("--serve", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.port))
    else:
        asyncio.run(main(arguments))
