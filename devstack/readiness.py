"""Waiting until the local stack answers: ``ReadinessChecks``, the part of ``LocalStack``
that checks each server at the protocol level (and creates the Kafka topics), the
protocol checks themselves, and ``run_async`` to run that wait from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared.dependencies import ping_mongo, ping_postgres

from .endpoints import HOST, SERVICES, Endpoints, StackError, redact
from .launch import Child
from .pids_and_ports import log_tail, one_line, tcp_answers


def run_async(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from sync code, in a private thread and event
    loop, so that it works whether or not the caller is inside a running loop. If the
    calling thread is interrupted (Ctrl-C, a signal handler raising), the coroutine is
    cancelled instead of being waited for."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(factory())  # type: ignore[arg-type]
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(loop.run_until_complete(task))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.set_exception(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="devstack-ready", daemon=True)
    thread.start()
    try:
        return outcome.result()
    except BaseException:
        if not outcome.done():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
            thread.join(10)
        raise


class ReadinessChecks:
    """Mixin of ``LocalStack``: wait until every server answers."""

    # Set by LocalStack.__init__ / _pick_ports / ServerLaunch._spawn.
    headless: bool
    external: dict[str, str]
    ready_timeout: float
    external_timeout: float
    ports: dict[str, int]
    temporal_namespace: str
    _children: dict[str, Child]

    async def _wait_ready(self, ep: Endpoints, only: tuple[str, ...] = SERVICES) -> None:
        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "temporal": lambda: self._temporal_ready(ep.temporal_address),
            "kafka": lambda: self._kafka_ready(ep),
            "mongo": lambda: ping_mongo(ep.mongo_url, timeout=1.0),
            "postgres": lambda: ping_postgres(ep.database_url, timeout=2.0),
            "redis": lambda: _redis_ping(ep.redis_url),
        }
        urls = {
            "temporal": ep.temporal_address,
            "kafka": ep.kafka_bootstrap,
            "mongo": ep.mongo_url,
            "postgres": ep.database_url,
            "redis": ep.redis_url,
        }
        tasks = [
            asyncio.ensure_future(self._wait_one(name, checks[name], urls[name]))
            for name in only
        ]
        if "temporal" in only and not self.headless and "temporal" not in self.external:
            tasks.append(asyncio.ensure_future(self._wait_ui()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_one(self, name: str, check: Callable[[], Awaitable[None]], url: str) -> None:
        external = name in self.external
        budget = self.external_timeout if external else self.ready_timeout
        deadline = time.monotonic() + budget
        last: BaseException | None = None
        delay = 0.05
        while True:
            child = self._children.get(name)
            if child is not None and child.popen.poll() is not None:
                raise StackError(
                    f"{name} exited early with code {child.popen.returncode}: "
                    f"{log_tail(child.log_path)} (see {child.log_path})"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(check(), timeout=min(max(remaining, 0.5), 5.0))
                return
            except StackError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        reason = one_line(f"{type(last).__name__}: {last}" if last else "no answer", 200)
        if external:
            env = {
                "postgres": "DATABASE_URL",
                "redis": "REDIS_URL",
                "temporal": "TEMPORAL_ADDRESS",
                "kafka": "KAFKA_BOOTSTRAP",
                "mongo": "MONGO_URL",
            }[name]
            raise StackError(
                f"the configured {name} server {redact(url)} is unreachable ({reason}); "
                f"start it, fix PAYMENTS_{env}, or unset it to use the embedded one"
            )
        child = self._children.get(name)
        log = f": {log_tail(child.log_path)} (see {child.log_path})" if child else ""
        raise StackError(f"{name} did not become ready within {budget:.0f}s ({reason}){log}")

    async def _wait_ui(self) -> None:
        port = self.ports["temporal_ui"]
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(tcp_answers, HOST, port, 0.3):
                return
            child = self._children.get("temporal")
            if child is not None and child.popen.poll() is not None:
                return  # reported by the temporal check
            await asyncio.sleep(0.1)
        raise StackError(
            f"the Temporal UI did not answer on port {port} within {self.ready_timeout:.0f}s"
        )

    async def _temporal_ready(self, address: str) -> None:
        from datetime import timedelta

        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client
        from temporalio.service import RPCError, RPCStatusCode

        client = await Client.connect(address, namespace=self.temporal_namespace)
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self.temporal_namespace),
                timeout=timedelta(seconds=2),
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and "temporal" in self.external:
                raise StackError(
                    f"Temporal namespace {self.temporal_namespace!r} does not exist on {address}; "
                    f"create it: temporal operator namespace create --namespace {self.temporal_namespace}"
                ) from exc
            raise

    async def _kafka_ready(self, ep: Endpoints) -> None:
        """Our broker: create the event topics as the processes would with this stack's
        settings (one broker, so replication 1: ``client_settings``) and wait until they
        have partitions. An external Kafka: only reachable; its topics are its
        deployment's (the processes report not-ready while one is missing)."""
        from aiokafka.admin import AIOKafkaAdminClient

        from shared.kafka import TopicError, TopicMissing, ensure_topics, event_topics
        from shared.settings import Settings

        bootstrap = ep.kafka_bootstrap
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        if not await asyncio.to_thread(tcp_answers, host, int(port), 0.5):
            raise ConnectionError(f"nothing answers on {bootstrap} yet")  # (aiokafka would log each try)
        # Defaults plus the stack's values; nothing from the environment.
        specs = event_topics(Settings.model_construct(**ep.client_settings))
        external = "kafka" in self.external
        if not external:
            try:
                await ensure_topics(bootstrap, specs, create=True, request_timeout_ms=3000)
            except TopicError as exc:
                if isinstance(exc, TopicMissing):
                    raise
                raise StackError(f"{exc} on {bootstrap}; check the broker's log") from exc
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            if external:
                await admin.list_topics()
                return
            described = await admin.describe_topics([s.name for s in specs])
            for d in described:
                if d.get("error_code") or not d.get("partitions"):
                    raise RuntimeError(f"topic {d.get('topic')} not ready: {d}")
        finally:
            await admin.close()


async def _redis_ping(url: str) -> None:
    import redis.asyncio as aredis

    client = aredis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        if not await client.ping():
            raise RuntimeError("PING did not answer PONG")
    finally:
        await client.aclose()

