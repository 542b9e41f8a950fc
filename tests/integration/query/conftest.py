"""Fixtures of the query-service tests, on top of the session ``settings`` (tests/conftest.py).

Every test gets its own MongoDB database (hence Redis key prefix), Kafka topics, consumer
group and task queue, so tests never see each other's events, documents, cache entries or
group members.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).parents[2] / "unit"))  # test_projection_strategies

from devstack.system import GROUP_INSTANCE_ID_ENV, member_env  # noqa: E402
from services.query.bootstrap import QueryRuntime, query_runtime  # noqa: E402
from services.query.http.app import create_app  # noqa: E402
from shared.auth import SCOPE_READ, mint_token  # noqa: E402
from shared.net import free_port  # noqa: E402
from shared.processes import BY_NAME  # noqa: E402
from shared.settings import Settings  # noqa: E402


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.3)


@pytest.fixture
def qsettings(settings: Settings) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return settings.model_copy(update={
        "mongo_db": f"qtest_{suffix}",
        "events_topic": f"qtest.{suffix}.events",
        "dlq_topic": f"qtest.{suffix}.dlq",
        "projector_group": f"qtest-{suffix}",
        "query_task_queue": f"payments-queries-{suffix}",
        "projector_metrics_port": free_port(),
        "log_json": True,
    })


def settings_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("kafka_bootstrap", "mongo_url", "mongo_db", "redis_url", "events_topic", "dlq_topic",
                 "projector_group", "projector_metrics_port", "data_dir", "jwt_secret"):
        env[f"PAYMENTS_{name.upper()}"] = str(getattr(s, name))
    return env


class ProjectorProcess:
    """``payments projector`` as a real subprocess (so it can be SIGKILLed). ``slot``: its
    static group instance id, as the local stack gives it (devstack.system.member_env), so a
    killed one started again takes its partitions back at once; None for an extra replica
    that stops for good (dynamic membership: it leaves its group on SIGTERM)."""

    def __init__(self, s: Settings, log_dir: Path, *args: str, slot: int | None = 0,
                 env: dict[str, str] | None = None) -> None:
        self.settings, self.args, self.log_dir, self.slot, self.env = s, args, log_dir, slot, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.log_dir / f"projector-{id(self)}-{self.runs}.log", "wb")  # noqa: SIM115
        env = dict(self.env) if self.env is not None else settings_env(self.settings)
        env.pop(GROUP_INSTANCE_ID_ENV, None)
        if self.slot is not None:
            env.update(member_env(BY_NAME["projector"], self.slot))
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "projector", *self.args],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 30.0) -> None:
        url = f"http://127.0.0.1:{self.settings.projector_metrics_port}/readyz"

        async def check() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(url, timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(check, timeout, "the projector's /readyz")

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.settings.projector_metrics_port}/metrics")).text

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log_dir.glob(f"projector-{id(self)}-*.log")))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def projector_factory(qsettings: Settings, tmp_path: Path) -> Iterator[Callable[..., ProjectorProcess]]:
    made: list[ProjectorProcess] = []

    def make(*args: str) -> ProjectorProcess:
        process = ProjectorProcess(qsettings, tmp_path, *args)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


@pytest.fixture
async def projector(projector_factory: Callable[..., ProjectorProcess]) -> ProjectorProcess:
    process = projector_factory()
    process.start()
    await process.ready()
    return process


@pytest.fixture
async def producer(qsettings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer: not our producer code, only the contract."""
    kafka = AIOKafkaProducer(bootstrap_servers=qsettings.kafka_bootstrap, acks="all")
    await kafka.start()
    yield kafka
    await kafka.stop()


@pytest.fixture
async def runtime(qsettings: Settings) -> AsyncIterator[QueryRuntime]:
    async with query_runtime(qsettings) as opened:
        await opened.read_model.ensure_indexes()
        yield opened
        await opened.mongo.drop_database(qsettings.mongo_db)


@pytest.fixture
async def api(qsettings: Settings, runtime: QueryRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(qsettings, runtime)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://query") as client:
            yield client


@pytest.fixture
def auth(qsettings: Settings) -> Callable[[str], dict[str, str]]:
    def headers(org: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(org, [SCOPE_READ], settings=qsettings)}"}

    return headers
