"""A whole system for a test module: every long-running ``payments`` process (or some of
them) as child processes on the session's servers, with a PostgreSQL database, Kafka
topics and groups, task queues and ports of its own, dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devstack.system import RunningSystem, isolated
from shared.settings import Settings
from tests.support.brokers import static_members


@dataclass
class TestSystem:
    settings: Settings
    env: dict[str, str]
    running: RunningSystem
    database_url: str


@contextlib.asynccontextmanager
async def isolated_system(base: Settings, name: str, log_dir: Path, *, names: list[str] | None = None,
                          env: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[TestSystem]:
    """Started and ready (``/readyz``) on entry, stopped and its database dropped on exit.
    ``overrides``: settings of the processes; ``env``: other variables they get (OTEL_*)."""
    database = f"payments_{name}_{uuid.uuid4().hex[:10]}".replace("-", "_")
    admin = await asyncpg.connect(base.database_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    database_url = urlunsplit(urlsplit(base.database_url)._replace(path=f"/{database}"))
    try:
        run_settings, child_env = isolated(base, name, log_json=True, database_url=database_url, **overrides)
        child_env.update(env or {})
        running = RunningSystem(run_settings, log_dir, static_members=static_members())
        await asyncio.to_thread(running.start, child_env, timeout=90, names=names)
        try:
            yield TestSystem(run_settings, child_env, running, database_url)
        finally:
            await asyncio.to_thread(running.stop)
    finally:
        admin = await asyncpg.connect(base.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
