"""Fixtures of the command-service tests, on top of the session ``settings`` (tests/conftest.py).

Each session gets its own PostgreSQL database, task queue and Kafka topic, so parallel
runs and the query service's tests never see our rows, workflows or events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.command.bootstrap import CommandRuntime, command_runtime
from services.command.config import CommandSettings
from services.command.entrypoints.http.app import create_app
from shared.auth import SCOPE_WRITE, mint_token
from shared.events import PaymentEvent, parse_event
from shared.kafka import consumer_options
from shared.settings import Settings


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def command_settings(settings: Any) -> AsyncIterator[CommandSettings]:
    suffix = uuid.uuid4().hex[:10]
    database = f"payments_test_{suffix}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    yield CommandSettings.from_settings(
        settings,
        database_url=_with_database(settings.database_url, database),
        command_task_queue=f"payments-commands-test-{suffix}",
        events_topic=f"payments.events.test-{suffix}",
        relay_poll_interval_seconds=0.2,
        relay_retry_backoff_seconds=0.2,
        relay_max_backoff_seconds=1.0,
        relay_send_timeout_seconds=5.0,
        command_worker_metrics_port=0,
        log_json=False,
    )
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def runtime(command_settings: CommandSettings) -> AsyncIterator[CommandRuntime]:
    """Pool + migrations + Temporal client + a command worker in this process."""
    async with command_runtime(command_settings, embedded_worker=True) as opened:
        yield opened


class Api:
    """An httpx client on the ASGI app that signs requests for an organization."""

    def __init__(self, http: httpx.AsyncClient, settings: CommandSettings) -> None:
        self.http = http
        self.settings = settings

    def auth(self, org: str, scopes: tuple[str, ...] = (SCOPE_WRITE,), subject: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(org, scopes, settings=self.settings, subject=subject)}"}

    async def request(self, method: str, path: str, *, org: str = "org-a", headers: dict[str, str] | None = None,
                      scopes: tuple[str, ...] = (SCOPE_WRITE,), **kwargs: Any) -> httpx.Response:
        merged = {**self.auth(org, scopes), **(headers or {})}
        return await self.http.request(method, path, headers=merged, **kwargs)

    async def create(self, org: str = "org-a", headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        payload = {"amount": 1250, "currency": "EUR", "description": "test"} | body
        return await self.request("POST", "/v1/payments", org=org, headers=headers, json=payload)

    async def created(self, org: str = "org-a", **body: Any) -> dict[str, Any]:
        response = await self.create(org, **body)
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="session")
async def api(runtime: CommandRuntime) -> AsyncIterator[Api]:
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://command.test", timeout=30) as http:
        yield Api(http, runtime.settings)


class Db:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def counts(self) -> tuple[int, int, int]:
        """(payments, outbox rows, commands) in the whole database."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM payments) AS p, (SELECT count(*) FROM outbox) AS o,"
                " (SELECT count(*) FROM commands) AS c"
            )
        return row["p"], row["o"], row["c"]

    async def outbox(self, payment_id: str) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(
                "SELECT payment_version, event_type, payload, published_at FROM outbox WHERE payment_id = $1"
                " ORDER BY id", payment_id,
            )


@pytest.fixture(scope="session")
def db(runtime: CommandRuntime) -> Db:
    return Db(runtime.pool)


@pytest.fixture
async def nothing_written(db: Db) -> AsyncIterator[None]:
    before = await db.counts()
    yield
    assert await db.counts() == before, "a rejected request wrote something"


async def consume_events(
    bootstrap: str, topic: str, wanted: set[str], *, timeout: float = 30.0, settings: Settings | None = None
) -> list[tuple[bytes, PaymentEvent, dict[str, bytes]]]:
    """Read ``topic`` from the beginning until every event id in ``wanted`` was seen."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        **consumer_options(settings or Settings()),  # default: the stack's, exported as PAYMENTS_*
    )
    await consumer.start()
    seen: list[tuple[bytes, PaymentEvent, dict[str, bytes]]] = []
    missing = set(wanted)
    try:
        async with asyncio.timeout(timeout):
            while missing:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        event = parse_event(record.value)
                        seen.append((record.key, event, dict(record.headers)))
                        missing.discard(event.id)
    except TimeoutError:
        pytest.fail(f"{len(missing)} of {len(wanted)} events never arrived on {topic}")
    finally:
        await consumer.stop()
    return seen





@pytest.fixture(scope="session")
def consume() -> Any:
    """``await consume(bootstrap, topic, wanted_event_ids)`` -> [(key, event, headers)]."""
    return consume_events
