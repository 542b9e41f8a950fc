"""The one place that wires the query side: settings -> MongoDB, Redis, read model,
cache and handlers. Every entrypoint (API, projector, worker, replay, benches) uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo import AsyncMongoClient

from services.query.adapters.cache import QueryCache
from services.query.adapters.read_model import ReadModel
from services.query.handlers import QueryHandlers
from shared.auth import cursor_key
from shared.consistency import ConsistencyTokens
from shared.settings import Settings


def cache_prefix(settings: Settings) -> str:
    """Redis key prefix: one namespace per read-model database."""
    return f"payments:{settings.mongo_db}"


@dataclass
class QueryContext:
    settings: Settings
    mongo: AsyncMongoClient
    read_model: ReadModel
    cache: QueryCache
    handlers: QueryHandlers

    async def check_mongo(self) -> None:
        await self.mongo.admin.command("ping")

    async def check_redis(self) -> None:
        await self.cache.redis.ping()

    async def close(self) -> None:
        await self.cache.close()
        await self.mongo.close()


def build(settings: Settings, *, use_cache: bool = True) -> QueryContext:
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000)
    read_model = ReadModel(mongo[settings.mongo_db], cursor_key(settings))
    cache = QueryCache.from_url(settings.redis_url, cache_prefix(settings))
    handlers = QueryHandlers(read_model, cache if use_cache else None,
                             ConsistencyTokens(settings.consistency_token_secret), max_wait=settings.read_wait_seconds)
    return QueryContext(settings, mongo, read_model, cache, handlers)
