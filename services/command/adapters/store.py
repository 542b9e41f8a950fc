"""The command handlers' store on PostgreSQL (asyncpg): one unit of work per command,
claiming its id, writing the payment with optimistic concurrency, appending its event to
the outbox (the permanent event log) and recording its result in one transaction, so no change exists without its event;
and the pool and migrations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from services.command.ports import Claim
from shared.events import PaymentEvent
from shared.payment import PaymentSnapshot

log = logging.getLogger("payments.command.store")

OUTBOX_CHANNEL = "payments_outbox"  # NOTIFY at each command's commit (the relay LISTENs)

_MIGRATION_LOCK = 724_311_001  # pg_advisory_lock key: one migrator at a time

PAYMENT_COLUMNS = (
    "id, organization_id, user_id, amount, currency, status, description, metadata, "
    "version, created_at, updated_at, deleted_at, expires_at, amount_refunded, refunds"
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min(2, size), max_size=size, init=_init_connection, command_timeout=30
    )


def migration_files() -> list[tuple[str, str]]:
    """``[(name, sql)]`` in order, from services/command/adapters/migrations/NNN_*.sql."""
    folder = resources.files("services.command.adapters") / "migrations"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the migrations not yet applied; idempotent and safe to run concurrently."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
                applied.append(name)
                log.info("applied migration %s", name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


def snapshot_from_row(row: asyncpg.Record) -> PaymentSnapshot:
    values = dict(row)
    values["currency"] = values["currency"].strip()
    return PaymentSnapshot.model_validate(values)


@dataclass
class PostgresUnitOfWork:
    """The statements of one command, inside one transaction (handlers.UnitOfWork)."""

    conn: asyncpg.Connection
    # One NOTIFY per transaction is enough (PostgreSQL folds identical ones at commit
    # anyway); a group-committed batch saves a round trip per command with it.
    notified: bool = False

    async def claim_command(self, org: str, command_id: str, command_type: str, payment_id: str | None) -> bool:
        """Reserve the command id; False if it already ran (or runs: we wait for it)."""
        status = await self.conn.execute(
            "INSERT INTO commands (organization_id, command_id, command_type, payment_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            org, command_id, command_type, payment_id,
        )
        return status.endswith(" 1")

    async def command_result(self, org: str, command_id: str) -> Any:
        return await self.conn.fetchval(
            "SELECT result FROM commands WHERE organization_id = $1 AND command_id = $2", org, command_id
        )

    async def save_result(self, org: str, command_id: str, result: Any) -> None:
        await self.conn.execute(
            "UPDATE commands SET result = $3 WHERE organization_id = $1 AND command_id = $2",
            org, command_id, result,
        )

    async def get_payment(self, org: str, payment_id: str, *, for_update: bool = False) -> PaymentSnapshot | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE organization_id = $1 AND id = $2{lock}", org, payment_id
        )
        return snapshot_from_row(row) if row else None

    # The set-based statements (a group-committed batch's creates: one round trip for all
    # of them) take one array per column and unnest them.

    async def claim_commands(self, claims: Sequence[Claim]) -> set[tuple[str, str]]:
        rows = await self.conn.fetch(
            "INSERT INTO commands (organization_id, command_id, command_type, payment_id, result)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])"
            " ON CONFLICT (organization_id, command_id) DO UPDATE SET result = EXCLUDED.result"
            " WHERE commands.result IS NULL RETURNING organization_id, command_id",
            *_columns(claims, 5),
        )
        return {(r[0], r[1]) for r in rows}

    async def command_results(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        rows = await self.conn.fetch(
            "SELECT organization_id, command_id, result FROM commands WHERE (organization_id, command_id)"
            " IN (SELECT * FROM unnest($1::text[], $2::text[])) AND result IS NOT NULL",
            *_columns(keys, 2),
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def release_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        await self.conn.execute(
            "DELETE FROM commands WHERE (organization_id, command_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            *_columns(keys, 2),
        )

    async def insert_payments(self, payments: Sequence[PaymentSnapshot]) -> set[tuple[str, str]]:
        """Ids are per organization: a taken one is skipped, not an error."""
        rows = await self.conn.fetch(
            # refunds as JSON text: a list inside a jsonb[] parameter would read as a dimension.
            f"INSERT INTO payments ({PAYMENT_COLUMNS}) SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12,"
            " c13, c14, c15::jsonb FROM unnest($1::text[], $2::text[],"
            " $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::int[],"
            " $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[], $14::bigint[],"
            " $15::text[]) AS u(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15)"
            " ON CONFLICT (organization_id, id) DO NOTHING RETURNING organization_id, id",
            *_columns([(p.id, p.organization_id, p.user_id, p.amount, p.currency, str(p.status), p.description,
                        p.metadata, p.version, p.created_at, p.updated_at, p.deleted_at, p.expires_at,
                        p.amount_refunded, json.dumps(_refunds(p))) for p in payments], 15),
        )
        return {(r[0], r[1]) for r in rows}

    async def update_payment(self, p: PaymentSnapshot, expected_version: int) -> bool:
        """Optimistic concurrency: False if the stored version is no longer ``expected_version``."""
        status = await self.conn.execute(
            "UPDATE payments SET amount = $3, status = $4, description = $5, metadata = $6,"
            " version = $7, updated_at = $8, deleted_at = $9, expires_at = $11, amount_refunded = $12,"
            " refunds = $13 WHERE id = $1 AND organization_id = $2 AND version = $10",
            p.id, p.organization_id, p.amount, str(p.status), p.description, p.metadata,
            p.version, p.updated_at, p.deleted_at, expected_version, p.expires_at, p.amount_refunded, _refunds(p),
        )
        return status.endswith(" 1")

    async def add_events(self, events: Sequence[PaymentEvent]) -> None:
        await self.conn.execute(
            "INSERT INTO outbox (event_id, organization_id, payment_id, payment_version, event_type, payload,"
            " created_at, actor, command_id) SELECT i, o, p, v, t, b, c, a, d FROM unnest($1::uuid[], $2::text[],"
            " $3::text[], $4::int[], $5::text[], $6::bytea[], $7::timestamptz[], $8::text[], $9::text[])"
            " WITH ORDINALITY AS e(i, o, p, v, t, b, c, a, d, n) ORDER BY n",
            *_columns([(e.id, e.organizationid, e.subject, e.paymentversion, e.type.short, e.to_json_bytes(), e.time,
                        e.actor, e.commandid) for e in events], 9),
        )
        if not self.notified:  # delivered at commit
            await self.conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
            self.notified = True

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        notified = self.notified
        try:
            async with self.conn.transaction():  # nested in the unit of work: a SAVEPOINT
                yield
        except BaseException:
            self.notified = notified  # a NOTIFY of a rolled-back savepoint is discarded with it
            raise


def _refunds(p: PaymentSnapshot) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in p.refunds]


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows -> one list per column (the parameters of an ``unnest``)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class PaymentStore:
    """The write store: units of work for the handlers (ports.CommandStore)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[PostgresUnitOfWork]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresUnitOfWork(conn)

    async def get_payment(self, org: str, payment_id: str) -> PaymentSnapshot | None:
        async with self.pool.acquire() as conn:
            return await PostgresUnitOfWork(conn).get_payment(org, payment_id)

    async def command_result(self, org: str, command_id: str) -> Any:
        async with self.pool.acquire() as conn:
            return await PostgresUnitOfWork(conn).command_result(org, command_id)

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
