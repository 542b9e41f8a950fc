"""The outbox table as the relay sees it (PostgreSQL): batches of unpublished events,
claimed so that several relays never publish one payment at once, marked published in
the claim's transaction; the backlog; and the NOTIFY each command's commit sends. The rows
themselves are written by the command's unit of work (adapters/store.py) and kept for good:
the outbox is the event log (migration 004), read back by adapters/event_log.py."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from services.command.adapters.store import OUTBOX_CHANNEL

log = logging.getLogger("payments.command.relay")

_KEY_LOCK_SEED = 724_311_002
# Bounded deletes: no long lock on a large backlog of expired rows.
PURGE_BATCH = 5000

CLAIM_KEYS = """
SELECT payment_id FROM (
    SELECT payment_id, min(id) AS first_id FROM outbox WHERE published_at IS NULL
    GROUP BY payment_id ORDER BY first_id LIMIT $1
) AS pending
WHERE pg_try_advisory_xact_lock(hashtextextended(payment_id, $2))
"""
CLAIM_ROWS = """
SELECT id, event_id, payment_id, payload FROM outbox
WHERE published_at IS NULL AND payment_id = ANY($1::text[])
ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
"""
BACKLOG = "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS lag FROM outbox WHERE published_at IS NULL"


async def delete_in_batches(conn: asyncpg.Connection, statement: str, retention_seconds: float) -> int:
    """Run a bounded DELETE (``$1``: the retention in seconds) until it deletes less than a batch."""
    total = 0
    while True:
        deleted = int((await conn.execute(statement, float(retention_seconds))).split()[-1])
        total += deleted
        if deleted < PURGE_BATCH:
            return total


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    payment_id: str
    payload: bytes


class Outbox:
    def __init__(self, pool: asyncpg.Pool, database_url: str) -> None:
        self.pool = pool
        self.database_url = database_url
        self._listener: asyncpg.Connection | None = None

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[list[OutboxRow]]:
        """Up to ``limit`` unpublished rows, in id order, of payments no other relay holds
        (one transaction-level advisory lock per payment). Leaving the block normally marks
        them published and commits; an error rolls back, and they are claimed again later."""
        async with self.pool.acquire() as conn, conn.transaction():
            keys = [r["payment_id"] for r in await conn.fetch(CLAIM_KEYS, limit, _KEY_LOCK_SEED)]
            rows = [OutboxRow(r["id"], str(r["event_id"]), r["payment_id"], bytes(r["payload"]))
                    for r in await conn.fetch(CLAIM_ROWS, keys, limit)] if keys else []
            yield rows
            if rows:
                # clock_timestamp(): after the rows' commit (a rebuild from the log relies on it)
                await conn.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
                                   [row.id for row in rows])

    async def backlog(self) -> tuple[int, float]:
        """Unpublished rows, and the age in seconds of the oldest one."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(BACKLOG)
        return int(row["n"]), max(float(row["lag"] or 0.0), 0.0)

    async def listen(self, on_notify: Callable[[], None]) -> None:
        """``on_notify()`` at each command's commit, on a connection of its own (kept; set
        up again after a loss). Polling still works while it cannot listen."""
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.database_url)
            await self._listener.add_listener(OUTBOX_CHANNEL, lambda *_: on_notify())
        except (OSError, asyncpg.PostgresError) as exc:
            self._listener = None
            log.warning("LISTEN %s unavailable (%s); polling", OUTBOX_CHANNEL, exc)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
