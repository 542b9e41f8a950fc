"""Start-up checks: wait (bounded) until a process's servers answer, else one clear line.

Each process names what it cannot work without (``needs`` in shared/processes.py). Before
it starts, the ``payments`` command waits up to ``PAYMENTS_STARTUP_TIMEOUT_SECONDS`` for those servers
(a pod may start before its database), logging what it waits for, and then exits 1 with
one line naming the server, the setting and the error, instead of a traceback.
Redis is never required: a Redis outage degrades queries to MongoDB.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from shared.net import redact_url
from shared.settings import Settings

log = logging.getLogger("payments.startup")
Check = Callable[[Settings], Awaitable[None]]


async def ping_postgres(url: str, timeout: float = 3.0) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        await conn.fetchval("select 1")
    finally:
        await conn.close()


async def ping_mongo(url: str, timeout: float = 3.0) -> None:
    from pymongo import AsyncMongoClient

    ms = int(timeout * 1000)
    client: AsyncMongoClient = AsyncMongoClient(url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms)
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


async def _postgres(settings: Settings) -> None:
    await ping_postgres(settings.database_url)


async def _temporal(settings: Settings) -> None:
    from temporalio.client import Client

    await asyncio.wait_for(Client.connect(settings.temporal_address, namespace=settings.temporal_namespace), 5)


async def _kafka(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=3000)
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # each refused attempt would log an ERROR; we report once
    try:
        await asyncio.wait_for(admin.start(), 5)
    finally:
        await admin.close()
        quiet.setLevel(level)


async def _mongo(settings: Settings) -> None:
    await ping_mongo(settings.mongo_url)


# What a process needs is in the process table (shared/processes.py, ``Process.needs``).
CHECKS: dict[str, tuple[str, str, Check]] = {
    # name: (what, setting, check)
    "postgres": ("PostgreSQL", "database_url", _postgres),
    "temporal": ("Temporal", "temporal_address", _temporal),
    "kafka": ("Kafka", "kafka_bootstrap", _kafka),
    "mongo": ("MongoDB", "mongo_url", _mongo),
}

class DependencyUnavailable(RuntimeError):
    pass


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


async def wait_for(settings: Settings, names: tuple[str, ...], timeout: float) -> None:
    """Return once every named server answers; raise DependencyUnavailable after ``timeout``."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    announced: set[str] = set()
    while pending:
        name = pending[0]
        what, field, check = CHECKS[name]
        try:
            await check(settings)
            pending.pop(0)
            continue
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable yet"
            address = redact_url(str(getattr(settings, field)))
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(
                    f"cannot reach {what} at {address} (PAYMENTS_{field.upper()}) after {timeout:.0f}s: "
                    f"{_reason(exc)}"
                ) from None
            if name not in announced:
                announced.add(name)
                log.warning("waiting for %s at %s: %s", what, address, _reason(exc))
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
