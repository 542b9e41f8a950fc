"""The query wing's composition root: from settings, MongoDB, Redis, the read model, the
cache and the projection signal behind the query handlers' ports, and the projection.
Every query process, test and benchmark opens :func:`query_runtime` and leaves it to close
what it opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pymongo import AsyncMongoClient

from services.query.adapters.batch_writes import MongoProjectionStore
from services.query.adapters.cache import QueryCache
from services.query.adapters.dead_letters import KafkaDeadLetters
from services.query.adapters.export_slots import RedisExportSlots
from services.query.adapters.projected_signal import ProjectionSignal
from services.query.adapters.read_model import MongoReadModel
from services.query.handlers import QueryHandlers
from services.query.ports import DeadLetter
from services.query.projection import Projection
from shared.auth import cursor_key
from shared.consistency import ConsistencyTokens
from shared.http import ReadinessCheck
from shared.settings import Settings


def cache_prefix(settings: Settings) -> str:
    """Redis key prefix: one namespace per read-model database."""
    return f"payments:{settings.mongo_db}"


@dataclass
class QueryRuntime:
    settings: Settings
    mongo: AsyncMongoClient
    read_model: MongoReadModel
    cache: QueryCache
    handlers: QueryHandlers


@contextlib.asynccontextmanager
async def query_runtime(settings: Settings) -> AsyncIterator[QueryRuntime]:
    """Open everything a query process needs; close it all on exit. Nothing connects
    yet: both clients connect on first use, so a process starts while a server is away
    (its readiness says so)."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000)
    try:
        read_model = MongoReadModel(mongo[settings.mongo_db], cursor_key(settings), hints=settings.mongo_index_hints)
        cache = QueryCache.from_url(settings.redis_url, cache_prefix(settings))
        signal = ProjectionSignal(settings.redis_url, cache_prefix(settings))  # subscribes on first use
        try:
            export_slots = RedisExportSlots(cache.redis, cache_prefix(settings))
            handlers = QueryHandlers(read_model, cache, ConsistencyTokens(settings.consistency_token_secret),
                                     max_wait=settings.read_wait_seconds, signal=signal, export_slots=export_slots)
            try:
                yield QueryRuntime(settings, mongo, read_model, cache, handlers)
            finally:
                await export_slots.close()
        finally:
            await signal.close()
            await cache.close()
    finally:
        await mongo.close()


def projection(runtime: QueryRuntime, dead_letter: DeadLetter, group: str) -> Projection:
    """The projection of one projector process of consumer group ``group``."""
    return Projection(MongoProjectionStore(runtime.mongo, runtime.read_model, group), runtime.cache, dead_letter,
                      group=group, trusted_sources=runtime.settings.trusted_sources())


@contextlib.asynccontextmanager
async def open_projection(runtime: QueryRuntime, group: str) -> AsyncIterator[Projection]:
    """The projector process's projection, its dead letters sent to Kafka."""
    dead_letters = KafkaDeadLetters(runtime.settings)
    await dead_letters.start()
    try:
        yield projection(runtime, dead_letters, group)
    finally:
        await dead_letters.stop()


def ops_checks(runtime: QueryRuntime) -> dict[str, ReadinessCheck]:
    """The readiness checks every query process shares."""

    async def mongodb() -> None:
        await runtime.mongo.admin.command("ping")

    async def redis() -> None:
        await runtime.cache.redis.ping()

    return {"mongodb": mongodb, "redis": redis}
