"""Wake read-your-writes waits when the projector commits, instead of only polling.

A read that waits for its writes (``min_version``, ``consistent_with``:
services/query/handlers.py ``wait_for``) polls MongoDB with a backoff (10 ms, doubling),
so a write committed just after a look is found up to one backoff step late (at 20
creates/s: p50 41 ms from the projector's write to the answer, 32-36 ms with this
signal; docs/benchmarks.md). So the projector publishes ``{prefix}:projected:{org}`` (in the pipeline of its
cache-epoch bump, services/query/adapters/cache.py, i.e. after its MongoDB commit), and
each query process keeps one subscription, waking the waits of that organization, which
then look again. The signal only says "look now": the answer is still read from MongoDB,
so a lost or late message costs latency, never correctness, and the backoff stays the
fallback while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("payments.query.projected_signal")

RECONNECT_SECONDS = 1.0


def projected_channel(prefix: str, org: str) -> str:
    return f"{prefix}:projected:{org}"


class ProjectionSignal:
    """One pattern subscription per process, started by the first wait."""

    def __init__(self, url: str, prefix: str) -> None:
        # Its own client: a subscription reads without a socket timeout (the cache's is 0.5 s).
        self._redis = aioredis.from_url(url, socket_connect_timeout=0.25, health_check_interval=30)
        self._prefix = prefix
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self, org: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the projector has committed a batch of ``org``'s events
        (clear it before each look at MongoDB, so that no commit is missed in between)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        event = asyncio.Event()
        self._waiting.setdefault(org, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(org, set())
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(org, None)

    async def _listen(self) -> None:
        pattern = projected_channel(self._prefix, "*")
        cut = len(projected_channel(self._prefix, ""))
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.psubscribe(pattern)
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                        if message is None:
                            continue
                        channel = message["channel"]
                        org = (channel.decode() if isinstance(channel, bytes) else channel)[cut:]
                        for event in self._waiting.get(org, ()):
                            event.set()
            except (RedisError, OSError) as exc:  # waits fall back to polling meanwhile
                log.warning("projection signal lost, resubscribing", extra={"fields": {"error": repr(exc)[:200]}})
                await asyncio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()
