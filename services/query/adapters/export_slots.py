"""One export at a time per organization: a lease in Redis (``SET NX PX``, renewed while
the export streams, deleted by its holder only), so the bound holds across the query
API's processes and a process that dies frees it after :data:`LEASE` seconds. With Redis
away, exports degrade to one at a time per organization and process (as the cache
degrades, an outage never fails a read)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from services.query.ports import ExportBusy

log = logging.getLogger("payments.query.export")

LEASE = 30.0  # seconds; renewed every LEASE / 3 while the export streams
# Delete / extend the lease only while it is still ours (a lease that expired may be another's).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


class RedisExportSlots:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._held: set[str] = set()  # this process's exports (the bound when Redis is away)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releasing: dict[str, asyncio.Task[Any]] = {}  # an org's lease being deleted

    async def acquire(self, org: str) -> Callable[[], None]:
        if org in self._held:
            raise ExportBusy(org)
        releasing = self._releasing.get(org)
        if releasing is not None:  # this process's last export of org just ended: let it free the lease
            await asyncio.wait({releasing}, timeout=2.0)
        key, token = f"{self.prefix}:export:{org}", uuid.uuid4().hex
        try:
            taken = await self.redis.set(key, token, nx=True, px=int(LEASE * 1000))
        except RedisError as exc:
            log.warning("export bound of %s checked in this process only: %s", org, exc)
            taken, key = True, ""
        if not taken:
            raise ExportBusy(org)
        self._held.add(org)
        renewal = asyncio.create_task(self._renew(key, token)) if key else None

        released = False

        def release() -> None:  # idempotent, never waits: a cancelled stream calls it
            nonlocal released
            if released:
                return
            released = True
            self._held.discard(org)
            if renewal is not None:
                renewal.cancel()
                self._spawn(self._release(key, token), org)

        return release

    def _spawn(self, coro: Any, org: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop any more (the process is ending): the lease expires
            coro.close()
            return
        self._tasks.add(task)
        self._releasing[org] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: self._releasing.pop(org, None) if self._releasing.get(org) is t else None)

    async def close(self) -> None:
        """Let the releases under way reach Redis (a process that ends frees its slots)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)

    async def _renew(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(LEASE / 3)
            with contextlib.suppress(RedisError):
                await self.redis.eval(_RENEW, 1, key, token, int(LEASE * 1000))

    async def _release(self, key: str, token: str) -> None:
        try:
            await self.redis.eval(_RELEASE, 1, key, token)
        except RedisError as exc:  # the lease expires by itself
            log.warning("could not release the export lease %s: %s", key, exc)
