"""The fault campaign's stack and faults: a private persistent local stack with every process,
and each fault of :data:`ALL_FAULTS` applied to it (bench/faults.py)."""


from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.fault_load import ORGS, ClientLog, send
from devstack import LocalStack
from devstack.brokers import session_broker
from devstack.system import GROUP_INSTANCE_ID_ENV, RunningSystem, base_url, isolated
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.net import free_port
from shared.processes import BY_NAME, LONG_RUNNING
from shared.settings import Settings

# Every fault of the campaign, in the order they run. ``kill:P`` SIGKILLs process P and
# starts it again; ``restart:S`` stops server S and starts it with the same command line;
# ``dynamic-kill:P`` SIGKILLs a consumer that is a dynamic group member, starts it again 3 s
# later, times until it consumes again (at most the session timeout + 5 s), then a second
# replica joins, consumes its share and leaves for good; the others are the combinations
# of issue 12.
ALL_FAULTS = (
    "kill:command-api", "kill:command-worker", "kill:relay", "kill:projector", "kill:intake", "kill:query-api",
    "dynamic-kill:projector", "dynamic-kill:intake",
    "restart:postgres", "restart:mongo", "restart:redis", "restart:temporal", "restart:kafka",
    "projector-killed-while-redis-down", "relay-killed-while-postgres-restarts",
    "two-projectors-while-mongo-restarts", "kafka-restart-under-load",
)

#: Per consumer, the metric that counts what it consumed (it is back once it grows).
CONSUMED = {"projector": "payments_projection_events_total", "intake": "payments_intake_messages_total"}


# --------------------------------------------------------------------------- the faults


KAFKA_FAULTS = ("restart:kafka", "kafka-restart-under-load")
DYNAMIC_KILLS = ("dynamic-kill:projector", "dynamic-kill:intake")
# What each broker cannot take. Apache Kafka takes every fault. Tansu is memory-only (a
# restart is a new, empty cluster). noida-db never evicts a vanished dynamic member, so
# its processes join as static members (devstack.system.member_env: a killed one started
# again replaces itself) and a dynamic member's SIGKILL is left out there.
UNSUPPORTED: dict[str, tuple[str, ...]] = {"apache": (), "noida": DYNAMIC_KILLS, "tansu": KAFKA_FAULTS}


class Campaign:
    def __init__(self, root: Path, kafka: str | None = None) -> None:
        kafka = kafka or session_broker()[0]  # Apache Kafka wherever java 17+ and mvn exist
        self.root = root
        self.stack = LocalStack(root / "stack", persist=True, headless=True, write_stack_file=False,
                                kafka_broker=kafka)
        self.system: RunningSystem | None = None
        self.settings: Settings | None = None
        self.env: dict[str, str] = {}
        self.extra: list[subprocess.Popen[bytes]] = []
        self.recoveries: list[tuple[str, float]] = []
        #: (consumer, seconds from its SIGKILL until it consumed again, bound)
        self.consumer_recoveries: list[tuple[str, float, float]] = []
        self.log: ClientLog | None = None
        self.peak_backlog = 0.0

    def start(self) -> None:
        endpoints = self.stack.start()
        base = Settings(**endpoints.as_settings(), data_dir=self.root / "data")
        self.settings, env = isolated(base, "faults", log_level="WARNING")
        self.env = {**env, **endpoints.as_env(), "PAYMENTS_DATA_DIR": str(self.root / "data")}
        self.system = RunningSystem(self.settings, self.root / "logs", static_members=self.stack.static_members)
        self.system.start(self.env, timeout=120)

    def stop(self) -> None:
        for proc in self.extra:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        if self.system is not None:
            self.system.stop()
        self.stack.stop()

    # processes

    def kill(self, name: str) -> None:
        assert self.system is not None
        child = self.system.children[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def start_process(self, name: str, *, wait: bool = True) -> None:
        """Start ``name`` again; ``wait=False`` while a server it needs is down on purpose."""
        assert self.system is not None
        self.system.start(self.env, timeout=120, names=[name], wait=wait)

    def second_replica(self, name: str = "projector") -> tuple[subprocess.Popen[bytes], str]:
        """An extra replica that stops for good, and its metrics URL: no static group
        instance id, so it leaves the group on SIGTERM (a static member would keep its
        partitions; devstack.system)."""
        port = free_port()
        env = {**self.env, BY_NAME[name].port_env: str(port)}
        env.pop(GROUP_INSTANCE_ID_ENV, None)
        with open(self.root / "logs" / f"{name}-2.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", name], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.extra.append(proc)
        return proc, f"http://127.0.0.1:{port}/metrics"

    async def consumed(self, metrics_url: str, metric: str, since: float, bound: float) -> float:
        """Seconds from ``since`` until the consumer at ``metrics_url`` counted a first record
        in ``metric`` (raises TimeoutError 30 s past ``bound``)."""
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() - since < bound + 30:
                with contextlib.suppress(httpx.HTTPError):
                    text = (await http.get(metrics_url)).text
                    if sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{")):
                        return time.monotonic() - since
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{metrics_url} consumed nothing {bound + 30:.0f}s after the fault")

    async def dynamic_kill(self, name: str) -> None:
        """SIGKILL ``name`` (a dynamic member: its group evicts it after the session timeout),
        start it again 3 s later and time until it consumes again; then a second replica
        joins, consumes its share, and is SIGTERMed (it must leave at once)."""
        assert self.settings is not None
        bound = self.settings.kafka_session_timeout_seconds + 5
        killed = time.monotonic()
        self.kill(name)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(self.start_process, name, wait=False)
        own = base_url(BY_NAME[name], self.settings) + "/metrics"
        self.consumer_recoveries.append((name, await self.consumed(own, CONSUMED[name], killed, bound), bound))
        joined = time.monotonic()
        second, metrics = self.second_replica(name)
        self.consumer_recoveries.append((f"{name} (2nd replica)", await self.consumed(metrics, CONSUMED[name], joined,
                                                                                        bound), bound))
        os.killpg(second.pid, signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 20) == 0, f"the second {name} did not leave cleanly"

    # faults

    async def apply(self, fault: str) -> None:
        kind, _, target = fault.partition(":")
        if kind == "kill":
            self.kill(target)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.start_process, target)
        elif kind == "dynamic-kill":
            await self.dynamic_kill(target)
        elif kind == "restart":
            await asyncio.to_thread(self.stack.stop_server, target)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.stack.start_server, target)
        elif fault == "projector-killed-while-redis-down":
            await self.stale_cache_probe()
        elif fault == "relay-killed-while-postgres-restarts":
            await asyncio.to_thread(self.stack.stop_server, "postgres")
            self.kill("relay")
            await asyncio.sleep(2.0)
            # The relay starts while PostgreSQL is still down: it waits for it at start-up.
            relay = asyncio.create_task(asyncio.to_thread(self.start_process, "relay"))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self.stack.start_server, "postgres")
            await relay
        elif fault == "two-projectors-while-mongo-restarts":
            second, _ = self.second_replica()
            await asyncio.sleep(5.0)  # the group rebalances over two members
            await asyncio.to_thread(self.stack.stop_server, "mongo")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.stack.start_server, "mongo")
            await asyncio.sleep(5.0)
            os.killpg(second.pid, signal.SIGTERM)
            await asyncio.to_thread(second.wait, 30)
        elif fault == "kafka-restart-under-load":
            await asyncio.to_thread(self.stack.stop_server, "kafka")
            await asyncio.sleep(3.0)
            await asyncio.to_thread(self.stack.start_server, "kafka")
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(ALL_FAULTS)}")

    async def stale_cache_probe(self, org: str = ORGS[-1]) -> None:
        """The projector dies while Redis is unreachable (paused: it keeps its data), after
        applying a change whose cache bump could not reach Redis. Nothing else happens to
        ``org`` afterwards, so only a durable bump keeps its cached answers fresh (the final
        check compares them with MongoDB)."""
        assert self.settings is not None and self.log is not None
        self.log.quiet.add(org)
        auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=self.settings)}
        query = f"http://127.0.0.1:{self.settings.query_api_port}/v1"
        redis_pid = self.stack.pids["redis"]
        async with httpx.AsyncClient(timeout=20) as http:
            for path in ("/payments", "/statistics", "/payments", "/statistics"):  # cached now
                (await http.get(query + path, headers=auth)).raise_for_status()
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                made = await send(http, self.log, "POST",
                                   f"http://127.0.0.1:{self.settings.command_api_port}/v1/payments", org, auth,
                                   {"amount": 4242, "currency": "EUR"}, time.monotonic() + 60)
                assert made is not None, "the probe's create was not acknowledged"
                seen = await http.get(f"{query}/payments/{made['id']}", params={"min_version": 1}, headers=auth)
                assert seen.status_code == 200, seen.text  # projected: its bump is pending
                self.kill("projector")
                await asyncio.to_thread(self.start_process, "projector", wait=False)
                await asyncio.sleep(2.0)
            finally:
                os.kill(redis_pid, signal.SIGCONT)

    async def all_ready(self, timeout: float) -> float:
        """Seconds until every process answers /readyz 200 (raises after ``timeout``)."""
        assert self.settings is not None
        started = time.monotonic()
        urls = [base_url(process, self.settings) + "/readyz" for process in LONG_RUNNING]
        async with httpx.AsyncClient(timeout=3) as http:
            while True:
                codes = []
                for url in urls:
                    try:
                        codes.append((await http.get(url)).status_code)
                    except httpx.HTTPError:
                        codes.append(0)
                if all(c == 200 for c in codes):
                    return time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"not ready after {timeout:.0f}s: {dict(zip(urls, codes, strict=True))}")
                await asyncio.sleep(0.2)

    async def watch_backlog(self, stop: asyncio.Event) -> None:
        assert self.settings is not None
        url = f"http://127.0.0.1:{self.settings.relay_metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=2) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    for line in (await http.get(url)).text.splitlines():
                        if line.startswith("payments_outbox_backlog "):
                            self.peak_backlog = max(self.peak_backlog, float(line.split()[1]))
                await asyncio.sleep(0.5)


