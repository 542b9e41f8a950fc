"""Fixtures of the query-service tests, on top of the session ``settings`` (tests/conftest.py).

Every test gets its own MongoDB database (hence Redis key prefix), Kafka topics, consumer
group and task queue, so tests never see each other's events, documents, cache entries or
group members.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.query.bootstrap import QueryRuntime, query_runtime
from services.query.entrypoints.http.app import create_app
from shared.auth import SCOPE_READ, mint_token
from shared.net import free_port
from shared.settings import Settings
from tests.support.children import ProjectorProcess


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
