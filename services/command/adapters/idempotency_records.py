"""The command API's Idempotency-Key records in PostgreSQL (``idempotency_keys``, per
organization): claimed with the request's fingerprint, answered once, released when the
request failed before any result, purged past their retention."""

from __future__ import annotations

import asyncpg

from services.command.adapters.outbox import PURGE_BATCH, delete_in_batches
from services.command.ports import IdempotencyRecord

# A key older than its retention no longer replays: the same key then runs as a new request.
PURGE = f"""
DELETE FROM idempotency_keys WHERE (organization_id, key) IN (
    SELECT organization_id, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1) LIMIT {PURGE_BATCH})
"""


class PostgresIdempotencyRecords:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, org: str, key: str, request_hash: str) -> IdempotencyRecord | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO idempotency_keys (organization_id, key, request_hash) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING key",
                org, key, request_hash,
            )
            if row:
                return None
            row = await conn.fetchrow(
                "SELECT request_hash, status_code, response_body, response_headers FROM idempotency_keys"
                " WHERE organization_id = $1 AND key = $2",
                org, key,
            )
        return IdempotencyRecord(row["request_hash"], row["status_code"], row["response_body"],
                                 row["response_headers"] or {})

    async def save(self, org: str, key: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET status_code = $3, response_body = $4, response_headers = $5"
                " WHERE organization_id = $1 AND key = $2 AND status_code IS NULL",
                org, key, status, body, headers,
            )

    async def release(self, org: str, key: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE organization_id = $1 AND key = $2 AND status_code IS NULL",
                org, key,
            )

    async def purge(self, retention_seconds: float) -> int:
        """Delete keys past their retention; how many."""
        async with self.pool.acquire() as conn:
            return await delete_in_batches(conn, PURGE, retention_seconds)
