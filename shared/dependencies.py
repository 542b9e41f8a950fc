"""Start-up checks: wait (bounded) until a process's servers answer, else one clear line.

Each long-running process names what it cannot work without. Before it starts, the
``payments`` command waits up to ``PAYMENTS_STARTUP_TIMEOUT_SECONDS`` for those servers
(a pod may start before its database), logging what it waits for, and then exits 1 with
one line naming the server, the setting and the error, instead of a traceback.
Redis is never required: a Redis outage degrades queries to MongoDB.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from shared.settings import Settings

log = logging.getLogger("payments.startup")
Check = Callable[[Settings], Awaitable[None]]


async def _postgres(settings: Settings) -> None:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url, timeout=3)
    await conn.close()


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
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, serverSelectionTimeoutMS=3000)
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


CHECKS: dict[str, tuple[str, str, Check]] = {
    # name: (what, setting, check)
    "postgres": ("PostgreSQL", "database_url", _postgres),
    "temporal": ("Temporal", "temporal_address", _temporal),
    "kafka": ("Kafka", "kafka_bootstrap", _kafka),
    "mongo": ("MongoDB", "mongo_url", _mongo),
}

PROCESS_NEEDS: dict[str, tuple[str, ...]] = {
    "command-api": ("postgres", "temporal"),
    "command-worker": ("postgres", "temporal"),
    "relay": ("postgres",),  # Kafka may come later: the relay keeps the backlog meanwhile
    "query-api": ("mongo",),
    "projector": ("kafka", "mongo"),
    "query-worker": ("mongo", "temporal"),
    "migrate": ("postgres",),
    "replay": ("kafka", "mongo"),
}


class DependencyUnavailable(RuntimeError):
    pass


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


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
            address = _redact(str(getattr(settings, field)))
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(
                    f"cannot reach {what} at {address} (PAYMENTS_{field.upper()}) after {timeout:.0f}s: "
                    f"{_reason(exc)}"
                ) from None
            if name not in announced:
                announced.add(name)
                log.warning("waiting for %s at %s: %s", what, address, _reason(exc))
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
