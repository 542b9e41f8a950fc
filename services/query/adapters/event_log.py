"""PostgreSQL's event log as the read side reads it to rebuild (``payments replay --from
postgres``): the command side's outbox, kept for good since migration 004, one row per
event with the CloudEvent as sent (``payload``). The table is the contract here, as the
topic is for the projector: no command-side code is imported.

A rebuild reads one consistent snapshot (REPEATABLE READ, read only) through a server-side
cursor, a batch at a time (bounded memory), in id order; then, after the switch, what the
snapshot could not see: every row committed after it is either unpublished or was marked
published after its commit (the relay's ``clock_timestamp()``), hence after the snapshot
began (:meth:`EventLog.since`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

ROWS = "SELECT payload FROM outbox ORDER BY id"
# Not indexed on purpose (an index on published_at would cost every publish): a filter over
# one sequential read of the table, once per rebuild.
SINCE = "SELECT payload FROM outbox WHERE published_at IS NULL OR published_at >= $1 ORDER BY id"
# Clocks of one server; the margin only re-reads a few events (applying is idempotent).
MARGIN = timedelta(seconds=1)


@dataclass
class LogSnapshot:
    conn: asyncpg.Connection
    started: datetime  # the snapshot's transaction start, on the server's clock
    total: int  # events in it

    async def batches(self, size: int) -> AsyncIterator[list[bytes]]:
        async for batch in _batches(self.conn, ROWS, size):
            yield batch


class EventLog:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[LogSnapshot]:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                started = await conn.fetchval("SELECT now()")  # the first statement takes the snapshot
                total = await conn.fetchval("SELECT count(*) FROM outbox")
                yield LogSnapshot(conn, started, int(total))
        finally:
            await conn.close()

    async def since(self, started: datetime, size: int) -> AsyncIterator[list[bytes]]:
        """The events a snapshot begun at ``started`` may not hold (and a few it does)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                async for batch in _batches(conn, SINCE, size, started - MARGIN):
                    yield batch
        finally:
            await conn.close()


async def _batches(conn: asyncpg.Connection, query: str, size: int, *args: object) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for row in conn.cursor(query, *args, prefetch=size):
        batch.append(bytes(row["payload"]))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
