"""The query API after a Redis outage it saw, on a real Valkey frozen with SIGSTOP (as the
fault campaign's ``projector-killed-while-redis-down`` does): the events projected meanwhile
could not bump the cache epoch, and once Redis is back no answer cached before the outage
may be served (services/query/adapters/cache.py; a fast twin in
tests/unit/test_cache_after_outage.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from devstack import LocalStack
from shared.settings import Settings
from tests.support.read_side import payments_of, seed


@pytest.fixture
def private_redis(settings: Settings, scratch_dir) -> Iterator[LocalStack]:  # noqa: ANN001
    """A Valkey of this test alone (every other server is the session's), to freeze."""
    stack = LocalStack(scratch_dir, headless=True, write_stack_file=False, external_timeout=30,
                       database_url=settings.database_url, temporal_address=settings.temporal_address,
                       kafka_bootstrap=settings.kafka_bootstrap, mongo_url=settings.mongo_url)
    stack.start()
    yield stack
    os.kill(stack.pids["redis"], signal.SIGCONT)
    stack.stop()


@pytest.fixture
def qsettings(qsettings: Settings, private_redis: LocalStack) -> Settings:
    assert private_redis.endpoints is not None
    return qsettings.model_copy(update={"redis_url": private_redis.endpoints.redis_url})


async def test_answers_cached_before_a_redis_outage_are_not_served_after_it(private_redis, runtime, api, auth):
    h = auth("org-frozen")
    await seed(runtime, payments_of("org-frozen", 3))

    async def totals() -> tuple[int, int]:
        search = await api.get("/v1/payments", headers=h)
        statistics = await api.get("/v1/statistics", headers=h)
        assert search.status_code == statistics.status_code == 200, (search.text, statistics.text)
        return search.json()["total"], statistics.json()["count"]

    assert await totals() == (3, 3)
    assert await totals() == (3, 3)  # now cached
    redis = private_redis.pids["redis"]
    os.kill(redis, signal.SIGSTOP)
    try:
        await seed(runtime, payments_of("org-frozen", 5))  # projected; the projector's bump cannot land
        assert await totals() == (5, 5)  # answered from MongoDB: the query API sees the outage
    finally:
        os.kill(redis, signal.SIGCONT)
    await asyncio.sleep(1.1)  # past the cache's cooldown after an error (1 s)
    assert await totals() == (5, 5), "an answer cached before the outage was served after it"
    assert await totals() == (5, 5)
