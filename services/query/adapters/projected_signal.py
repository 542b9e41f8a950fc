"""The projection signal on Redis pub/sub: right after each commit the projection names,
per organization, the payments it wrote, and every query process keeps one subscription
that wakes exactly the reads waiting for those payments (not every wait of the
organization). It only says "look now": a lost message costs latency, never correctness
(the waits still poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("payments.query.projected_signal")

RECONNECT_SECONDS = 1.0  # after a lost subscription, doubling up to MAX_RECONNECT_SECONDS
MAX_RECONNECT_SECONDS = 60.0
MAX_IDS = 1000  # past this many payments in one message: "*", every wait of the organization looks


def projected_channel(prefix: str, org: str) -> str:
    return f"{prefix}:projected:{org}"


def announcements(prefix: str, applied: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """(channel, payload) per organization for these (organization, payment id) writes."""
    by_org: dict[str, set[str]] = defaultdict(set)
    for org, payment_id in applied:
        by_org[org].add(payment_id)
    return [(projected_channel(prefix, org), json.dumps(sorted(ids) if len(ids) <= MAX_IDS else "*").encode())
            for org, ids in sorted(by_org.items())]


class ProjectionSignal:
    """One pattern subscription per process, started by the first wait."""

    def __init__(self, url: str, prefix: str) -> None:
        # Its own client: a subscription reads without a socket timeout (the cache's is 0.5 s).
        self._redis = aioredis.from_url(url, socket_connect_timeout=0.25, health_check_interval=30)
        self._prefix = prefix
        self._waiting: dict[str, dict[str, set[asyncio.Event]]] = {}  # org -> payment id -> waits
        self._listener: asyncio.Task[None] | None = None
        # Subscribed: a commit from now on reaches the waits (until an error says otherwise),
        # so they need not poll often.
        self.live = False

    @contextlib.asynccontextmanager
    async def watching(self, org: str, payment_ids: Iterable[str]) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the projector has committed one of these payments (clear
        it before each look at MongoDB, so that no commit is missed in between)."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        event = asyncio.Event()
        ids = set(payment_ids)
        waits = self._waiting.setdefault(org, {})
        for payment_id in ids:
            waits.setdefault(payment_id, set()).add(event)
        try:
            yield event
        finally:
            for payment_id in ids:
                events = waits.get(payment_id, set())
                events.discard(event)
                if not events:
                    waits.pop(payment_id, None)
            if not waits:
                self._waiting.pop(org, None)

    def _wake(self, org: str, payload: bytes) -> None:
        waits = self._waiting.get(org)
        if not waits:
            return
        try:
            ids = json.loads(payload)
        except ValueError:
            ids = "*"
        chosen = waits.values() if ids == "*" or not isinstance(ids, list) else (
            waits[i] for i in ids if isinstance(i, str) and i in waits)
        for events in list(chosen):
            for event in events:
                event.set()

    async def _listen(self) -> None:
        pattern = projected_channel(self._prefix, "*")
        cut = len(projected_channel(self._prefix, ""))
        pause = RECONNECT_SECONDS
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.psubscribe(pattern)
                    self.live = True
                    pause = RECONNECT_SECONDS
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                        if message is None:
                            continue
                        channel = message["channel"]
                        org = (channel.decode() if isinstance(channel, bytes) else channel)[cut:]
                        self._wake(org, message["data"])
            except (RedisError, OSError) as exc:  # waits fall back to polling meanwhile
                self.live = False
                log.warning("projection signal lost, resubscribing", extra={"fields": {
                    "error": repr(exc)[:200], "retry_in_seconds": pause}})
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RECONNECT_SECONDS)  # a Redis that refuses PSUBSCRIBE: rarely

    async def close(self) -> None:
        self.live = False
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()
