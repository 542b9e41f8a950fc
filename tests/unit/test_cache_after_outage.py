"""The query cache after a Redis outage it saw (services/query/adapters/cache.py): no answer
cached before the outage is served until the organization's epoch was bumped after it.

Redis here is a small in-memory stand-in with the commands the cache uses; the same
scenario runs on a real Valkey, frozen with SIGSTOP, in
tests/integration/query/test_cache_outage.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError

from services.query.adapters.cache import QueryCache, epoch_key


class Total(BaseModel):
    total: int


class MemoryRedis:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise RedisConnectionError("Redis is frozen")

    async def get(self, key: str) -> Any:
        self._up()
        return self.data.get(key)

    async def mget(self, *keys: str) -> list[Any]:
        self._up()
        return [self.data.get(k) for k in keys]

    async def incr(self, key: str) -> int:
        self._up()
        self.data[key] = int(self.data.get(key, 0)) + 1
        return self.data[key]

    async def set(self, key: str, value: Any, ex: int | None = None, px: int | None = None, nx: bool = False) -> Any:
        self._up()
        if nx and key in self.data:
            return None
        self.data[key] = value
        return True

    async def delete(self, key: str) -> int:
        self._up()
        return int(self.data.pop(key, None) is not None)

    def pipeline(self, transaction: bool = False) -> MemoryPipeline:
        return MemoryPipeline(self)


class MemoryPipeline:
    def __init__(self, redis: MemoryRedis) -> None:
        self.redis, self.ops = redis, []

    async def __aenter__(self) -> MemoryPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.ops.append((name, args, kwargs))

    async def execute(self) -> list[Any]:
        return [await getattr(self.redis, name)(*args, **kwargs) for name, args, kwargs in self.ops]


async def test_an_answer_cached_before_an_outage_is_not_served_after_it() -> None:
    redis = MemoryRedis()
    cache = QueryCache(redis, cooldown=0)  # type: ignore[arg-type]
    mongo = {"org-a": 53, "org-b": 7}  # what the read model holds
    computed: list[str] = []

    async def search(org: str) -> tuple[Total, str]:
        async def compute() -> Total:
            computed.append(org)
            return Total(total=mongo[org])

        return await cache.get_or_compute("search", org, "g0", "all", Total, compute)

    assert await search("org-a") == (Total(total=53), "miss")
    assert await search("org-b") == (Total(total=7), "miss")
    assert await search("org-a") == (Total(total=53), "hit")

    redis.down = True
    mongo.update({"org-a": 62, "org-b": 9})  # the projector applied events; their bumps failed
    assert await search("org-a") == (Total(total=62), "bypass")
    redis.down = False  # back, and nobody bumped the epochs yet

    assert await search("org-a") == (Total(total=62), "miss")
    assert await search("org-b") == (Total(total=9), "miss")  # not read during the outage: the same
    assert await search("org-a") == (Total(total=62), "hit")  # cached again from then on
    assert redis.data[epoch_key(cache.prefix, "org-a")] == 1  # one bump per organization and outage
    assert computed == ["org-a", "org-b", "org-a", "org-a", "org-b"]


async def test_an_outage_during_the_bump_leaves_the_organization_to_bump_again() -> None:
    redis = MemoryRedis()
    cache = QueryCache(redis, cooldown=0)  # type: ignore[arg-type]
    mongo = {"org-a": 1}

    async def compute() -> Total:
        return Total(total=mongo["org-a"])

    await cache.get_or_compute("search", "org-a", "g0", "all", Total, compute)
    redis.down = True
    await cache.get_or_compute("search", "org-a", "g0", "all", Total, compute)
    mongo["org-a"] = 2
    assert await cache.get_or_compute("search", "org-a", "g0", "all", Total, compute) == (Total(total=2), "bypass")
    redis.down = False
    assert await cache.get_or_compute("search", "org-a", "g0", "all", Total, compute) == (Total(total=2), "miss")
