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
import httpx
from aiokafka import AIOKafkaProducer

from devstack.system import RunningSystem, base_url, isolated
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.processes import BY_NAME
from shared.settings import Settings
from tests.support.brokers import static_members


@dataclass
class IsolatedSystem:
    settings: Settings
    env: dict[str, str]
    running: RunningSystem
    database_url: str


@contextlib.asynccontextmanager
async def isolated_system(base: Settings, name: str, log_dir: Path, *, names: list[str] | None = None,
                          env: dict[str, str] | None = None, **overrides: Any) -> AsyncIterator[IsolatedSystem]:
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
            yield IsolatedSystem(run_settings, child_env, running, database_url)
        finally:
            await asyncio.to_thread(running.stop)
    finally:
        admin = await asyncpg.connect(base.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def exercise_every_series(settings: Settings, org: str) -> None:
    """Traffic that makes every labelled series the dashboard and the alerts use exist:
    a command's success and rejection, a cache miss and hit, the intake's dead letter."""
    command = f"http://127.0.0.1:{settings.command_api_port}"
    query = f"http://127.0.0.1:{settings.query_api_port}"
    auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=settings)}
    async with httpx.AsyncClient(timeout=30) as http:
        payment = (await http.post(f"{command}/v1/payments", headers=auth, json={"amount": 100, "currency": "USD"})).json()
        rejected = await http.post(f"{command}/v1/payments/{payment['id']}/refund", headers=auth)
        assert rejected.status_code == 409, rejected.text
        await http.get(f"{query}/v1/payments/{payment['id']}", params={"min_version": 1}, headers=auth)
        for _ in range(2):
            await http.get(f"{query}/v1/payments", headers=auth)
            await http.get(f"{query}/v1/statistics", headers=auth)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:  # a message on the commands topic that is no command
            await producer.send_and_wait(settings.commands_topic, b"not a command")
        finally:
            await producer.stop()
        intake = base_url(BY_NAME["intake"], settings)
        async with asyncio.timeout(60):
            while "payments_intake_messages_total{" not in (await http.get(f"{intake}/metrics")).text:
                await asyncio.sleep(0.2)
