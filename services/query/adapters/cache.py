"""Redis cache of query results with per-organization epochs.

Keys: ``{prefix}:gen:{org}`` holds the organization's cache epoch (an integer the
projector INCRs after applying that organization's events; the key keeps its name from
when the epoch was called a generation, so that an upgrade keeps counting up and never
revisits an epoch that older cached answers are stored under). Cached answers live under
``{prefix}:{kind}:{org}:{read-model generation}:{epoch}:{digest of the query}``, so
a bump (or a replay switching the read-model generation) makes every older answer
unreachable at once; the TTL then reclaims them. TTLs follow the seed: search 300 s,
by id 600 s, statistics 300 s; a history page and a payment as at a version 600 s.

Herd protection: concurrent misses on one key in a process share one computation
(in-process single flight); across processes, the first to take a short Redis lock
(``SET NX PX``) computes while the others poll the value briefly before computing
themselves.

Read-your-writes (``reflect``, from a consistency token): the projector bumps the
epoch only *after* its MongoDB commit, so right after a write an entry under the
current epoch may predate it. The first reader that finds the writes applied in
MongoDB therefore bumps the epoch itself and, in the same MULTI, sets a marker
``{prefix}:reflects:{org}:{read-model generation}:{digest of the writes}``. A marker proves
that every answer under the current epoch or a later one was computed after the
writes were applied, so later readers of the same token use the cache as usual (one MGET
instead of one GET). This relies on exactly one thing: the epoch key only grows
(INCR), whoever bumps it.

Degradation: any Redis error counts in ``payments_cache_errors_total`` and the query is
answered from MongoDB; after an error Redis is skipped for ``cooldown`` seconds so a
dead Redis costs nothing per query.

After an outage: while Redis was unreachable the projector may have applied events whose
epoch bumps it could not make (it retries them, from MongoDB's pending-bumps record, once
Redis answers, or after its own restart). So a process that saw Redis fail bumps each
organization's epoch itself before its first cached read of that organization after the
outage: no answer cached before the outage is served again, and an answer cached from then
on was computed after every write of the outage was in MongoDB.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from services.query.adapters.projected_signal import announcements
from services.query.ports import Reflect
from shared.telemetry import CACHE_ERRORS

log = logging.getLogger("payments.query.cache")

TTL = {"search": 300, "get": 600, "statistics": 300, "history": 600, "get_as_of": 600}
MARKER_TTL = max(TTL.values())  # past it, the next reader of the token bumps once more
LOCK_MS = 2000
LOCK_WAIT = 0.5  # seconds a loser of the lock waits for the winner's answer

M = TypeVar("M", bound=BaseModel)


def digest(value: BaseModel | str) -> str:
    text = value if isinstance(value, str) else value.model_dump_json()
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def epoch_key(prefix: str, org: str) -> str:
    return f"{prefix}:gen:{org}"


def marker_key(prefix: str, org: str, model_gen: str, writes_digest: str) -> str:
    return f"{prefix}:reflects:{org}:{model_gen}:{writes_digest}"


def answer_key(prefix: str, kind: str, org: str, model_gen: str, epoch: int, query_digest: str) -> str:
    return f"{prefix}:{kind}:{org}:{model_gen}:{epoch}:{query_digest}"


class QueryCache:
    def __init__(self, client: aioredis.Redis, prefix: str = "payments:q", cooldown: float = 1.0) -> None:
        self.redis = client
        self.prefix = prefix
        self.cooldown = cooldown
        self._down_until = 0.0
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self._outages = 0  # Redis errors seen by this process
        self._current: set[str] = set()  # organizations bumped since the last outage

    @classmethod
    def from_url(cls, url: str, prefix: str = "payments:q") -> QueryCache:
        client = aioredis.from_url(url, socket_connect_timeout=0.25, socket_timeout=0.5,
                                   health_check_interval=30)
        return cls(client, prefix)

    async def close(self) -> None:
        await self.redis.aclose()

    # ----------------------------------------------------------------- resilience

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        CACHE_ERRORS.inc()
        self._down_until = time.monotonic() + self.cooldown
        self._outages += 1
        self._current.clear()
        log.warning("redis unavailable, answering from MongoDB", extra={"fields": {"error": repr(exc)[:200]}})

    async def _after_outage(self, org: str) -> bool:
        """False when Redis is unusable. After an outage this process saw, the first use of
        ``org``'s epoch bumps it (module docstring)."""
        if not self._outages or org in self._current:
            return True
        outages = self._outages
        ok, _ = await self._safe(self.redis.incr(epoch_key(self.prefix, org)))
        if ok and outages == self._outages:  # no newer outage while bumping
            self._current.add(org)
        return ok

    async def _safe(self, op: Awaitable[Any]) -> tuple[bool, Any]:
        try:
            return True, await op
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False, None

    # ----------------------------------------------------------------- epochs

    async def bump(self, orgs: set[str]) -> None:
        """Invalidate every cached answer of these organizations (called by the projector)."""
        if not orgs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for org in sorted(orgs):
                pipe.incr(epoch_key(self.prefix, org))
            await pipe.execute()

    async def announce(self, applied: Iterable[tuple[str, str]]) -> None:
        """Wake the reads waiting for these (organization, payment id) writes, just
        committed (projected_signal.py). Best effort: a failure costs them latency only."""
        messages = announcements(self.prefix, applied)
        if not messages or not self._available():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for channel, payload in messages:
                    pipe.publish(channel, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)

    # ----------------------------------------------------------------- read-through

    async def get_or_compute(
        self, kind: str, org: str, model_gen: str, query: BaseModel | str,
        model: type[M], compute: Callable[[], Awaitable[M]], *, reflect: Reflect | None = None,
    ) -> tuple[M, str]:
        """``(answer, "hit" | "miss" | "bypass")``; "bypass" means Redis was unusable.
        With ``reflect`` the answer reflects those writes (module docstring)."""

        async def direct() -> M:
            if reflect is not None:
                await reflect.wait()
            return await compute()

        if not self._available() or not await self._after_outage(org):
            return await direct(), "bypass"
        if reflect is None:
            ok, epoch = await self._safe(self.redis.get(epoch_key(self.prefix, org)))
        else:
            ok, epoch = await self._reflecting_epoch(org, model_gen, reflect)
        if not ok:
            return await direct(), "bypass"
        key = answer_key(self.prefix, kind, org, model_gen, int(epoch or 0), digest(query))
        ok, raw = await self._safe(self.redis.get(key))
        if not ok:
            return await direct(), "bypass"
        if raw is not None:
            return model.model_validate_json(raw), "hit"
        flight = self._flights.get(key)
        if flight is not None:  # the same key is being computed in this process
            return await asyncio.shield(flight), "hit"
        fut: asyncio.Future[M] = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        try:
            value = await self._fill(kind, key, model, compute)
            fut.set_result(value)
            return value, "miss"
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._flights[key]

    async def _reflecting_epoch(self, org: str, model_gen: str, reflect: Reflect) -> tuple[bool, Any]:
        """``(ok, epoch)`` under which every answer reflects ``reflect``'s writes."""
        counter = epoch_key(self.prefix, org)
        marker = marker_key(self.prefix, org, model_gen, reflect.digest)
        ok, values = await self._safe(self.redis.mget(counter, marker))
        if not ok or values[1] is not None:
            return ok, values[0] if ok else None
        await reflect.wait()  # outside _safe: its NotCaughtUp is a TimeoutError, an OSError

        async def bump_and_mark() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                pipe.set(marker, b"1", ex=MARKER_TTL)
                return (await pipe.execute())[0]

        return await self._safe(bump_and_mark())

    async def _fill(self, kind: str, key: str, model: type[M], compute: Callable[[], Awaitable[M]]) -> M:
        lock = key + ":lock"
        ok, won = await self._safe(self.redis.set(lock, b"1", nx=True, px=LOCK_MS))
        if ok and not won:  # another process computes this answer: wait for it, briefly
            deadline = time.monotonic() + LOCK_WAIT
            delay = 0.005
            while time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                ok, raw = await self._safe(self.redis.get(key))
                if not ok:
                    break
                if raw is not None:
                    return model.model_validate_json(raw)
        value = await compute()
        if ok:
            await self._safe(self._store(key, lock, value.model_dump_json(), TTL[kind], bool(won)))
        return value

    async def _store(self, key: str, lock: str, payload: str, ttl: int, release: bool) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, payload, ex=ttl)
            if release:
                pipe.delete(lock)
            await pipe.execute()
