"""The command wing's composition root: from settings, the PostgreSQL pool (migrated), the
store and the idempotency records, the Temporal connection, the command client with group
commit around it, and the embedded worker. Every entry point, test and benchmark opens
the same graph here and leaves it to close what it opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from services.command.adapters.idempotency_records import PostgresIdempotencyRecords
from services.command.adapters.store import PaymentStore, create_pool, migrate
from services.command.config import CommandSettings
from services.command.temporal.client import PaymentCommandClient
from services.command.temporal.group_commit import GroupCommit
from services.command.temporal.worker import build_worker
from shared.consistency import ConsistencyTokens
from shared.http import ReadinessCheck
from shared.temporal import connect

# What the entry points send commands to: the client, or group commit around it.
Commands = PaymentCommandClient | GroupCommit


@dataclass
class CommandRuntime:
    settings: CommandSettings
    pool: asyncpg.Pool
    store: PaymentStore
    idempotency: PostgresIdempotencyRecords
    temporal: Client
    commands: Commands
    worker: Worker | None


@contextlib.asynccontextmanager
async def open_store(
    settings: CommandSettings, *, pool_size: int | None = None, run_migrations: bool = True
) -> AsyncIterator[PaymentStore]:
    """The PostgreSQL pool (migrated) behind a store; the relay needs nothing more."""
    pool = await create_pool(settings.database_url, size=pool_size or settings.database_pool_size)
    try:
        if run_migrations:
            await migrate(pool)
        yield PaymentStore(pool)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def command_runtime(
    settings: CommandSettings, *, embedded_worker: bool | None = None, run_migrations: bool = True
) -> AsyncIterator[CommandRuntime]:
    """Open everything a command process needs; close it all on exit."""
    embedded = settings.command_api_embedded_worker if embedded_worker is None else embedded_worker
    async with open_store(settings, run_migrations=run_migrations) as store:
        temporal = await connect(settings)
        client = PaymentCommandClient(
            temporal, task_queue=settings.command_task_queue,
            # Eager start hands the first workflow task to a worker of this same client,
            # whose local activity then hands the result straight to the waiting request.
            eager_start=settings.command_eager_start and embedded,
            local_results=settings.command_local_results and embedded,
            workflow_timeout=timedelta(seconds=settings.command_workflow_timeout_seconds),
            store=store,
            tokens=ConsistencyTokens(settings.consistency_token_secret),
        )
        commands = GroupCommit(client, **group_commit_options(settings)) if settings.command_group_commit else client
        hand_over = client.local_results.deliver if client.local_results else None
        worker = build_worker(temporal, store, settings, hand_over=hand_over) if embedded else None
        runtime = CommandRuntime(settings, store.pool, store, PostgresIdempotencyRecords(store.pool), temporal,
                                 commands, worker)
        if worker is None:
            yield runtime
        else:
            async with worker:
                yield runtime


def group_commit_options(settings: CommandSettings) -> dict[str, float]:
    """GroupCommit's bounds from settings."""
    return {"max_items": settings.command_group_commit_max_items,
            "max_bytes": settings.command_group_commit_max_bytes,
            "max_in_flight": settings.command_group_commit_in_flight,
            "max_hold": settings.command_group_commit_max_hold_seconds}


def ops_checks(runtime: CommandRuntime) -> dict[str, ReadinessCheck]:
    async def temporal() -> None:
        await runtime.temporal.service_client.check_health(timeout=timedelta(seconds=2))

    return {"postgres": runtime.store.ping, "temporal": temporal}
