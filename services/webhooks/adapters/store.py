"""Endpoints and deliveries in PostgreSQL (migration 007_webhooks.sql), tenant-scoped:
every query names the organization, so another organization's endpoint is not found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.webhooks.messages import (
    AttemptView,
    Delivery,
    DeliveryRef,
    DeliveryStatus,
    Endpoint,
    NewDelivery,
    Subscription,
)

ENDPOINT_COLUMNS = ("id, organization_id, url, description, events, enabled, disabled_reason, "
                    "previous_secret_until, failing_since, created_at, updated_at")
DELIVERY_COLUMNS = ("id::text, endpoint_id, event_id, event_type, payment_id, payment_version, status, attempts, "
                    "last_status_code, last_error, next_attempt_at, created_at, completed_at")
MAX_ERROR_CHARS = 500


class EndpointLimitReached(Exception):
    pass


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint.model_validate({**dict(row), "events": list(row["events"])})


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery.model_validate(dict(row))


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ----------------------------------------------------------------------- endpoints

    async def create_endpoint(self, org: str, url: str, description: str, events: Sequence[str],
                              sealed_secret: bytes, *, limit: int) -> Endpoint:
        async with self.pool.acquire() as conn, conn.transaction():
            # One creator per organization at a time: the count below stays true.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))", org)
            count = await conn.fetchval("SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1", org)
            if count >= limit:
                raise EndpointLimitReached(f"an organization has at most {limit} webhook endpoints")
            row = await conn.fetchrow(
                f"INSERT INTO webhook_endpoints (organization_id, id, url, description, events, secret_encrypted) "
                f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ENDPOINT_COLUMNS}",
                org, f"we_{uuid.uuid4().hex}", url, description, list(events), sealed_secret)
        return _endpoint(row)

    async def endpoints(self, org: str) -> list[Endpoint]:
        rows = await self.pool.fetch(f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organization_id = $1 "
                                     "ORDER BY created_at, id", org)
        return [_endpoint(r) for r in rows]

    async def endpoint(self, org: str, endpoint_id: str) -> Endpoint | None:
        row = await self.pool.fetchrow(f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints "
                                       "WHERE organization_id = $1 AND id = $2", org, endpoint_id)
        return _endpoint(row) if row else None

    async def delete_endpoint(self, org: str, endpoint_id: str) -> bool:
        done = await self.pool.execute("DELETE FROM webhook_endpoints WHERE organization_id = $1 AND id = $2",
                                       org, endpoint_id)
        return done != "DELETE 0"

    async def set_enabled(self, org: str, endpoint_id: str, enabled: bool, reason: str | None) -> Endpoint | None:
        row = await self.pool.fetchrow(
            f"UPDATE webhook_endpoints SET enabled = $3, disabled_reason = $4, updated_at = now(), "
            f"failing_since = CASE WHEN $3 THEN NULL ELSE failing_since END "
            f"WHERE organization_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}",
            org, endpoint_id, enabled, None if enabled else reason)
        return _endpoint(row) if row else None

    async def rotate_secret(self, org: str, endpoint_id: str, sealed_secret: bytes,
                            overlap_seconds: float) -> Endpoint | None:
        row = await self.pool.fetchrow(
            f"UPDATE webhook_endpoints SET previous_secret_encrypted = secret_encrypted, "
            f"previous_secret_until = now() + make_interval(secs => $4), secret_encrypted = $3, updated_at = now() "
            f"WHERE organization_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}",
            org, endpoint_id, sealed_secret, float(overlap_seconds))
        return _endpoint(row) if row else None

    async def subscriptions(self, orgs: Sequence[str]) -> dict[str, list[Subscription]]:
        """``{org: [subscription]}`` of the enabled endpoints of ``orgs``."""
        rows = await self.pool.fetch("SELECT organization_id, id, events, created_at FROM webhook_endpoints "
                                     "WHERE organization_id = ANY($1::text[]) AND enabled", list(orgs))
        found: dict[str, list[Subscription]] = {}
        for r in rows:
            found.setdefault(r["organization_id"], []).append(Subscription(r["id"], list(r["events"]), r["created_at"]))
        return found

    # ----------------------------------------------------------------------- deliveries

    async def add_deliveries(self, deliveries: Sequence[NewDelivery]) -> list[tuple[NewDelivery, DeliveryRef]]:
        """Record each (idempotent per endpoint and event); the pending ones come back to be
        handed to their workflow (again, after a crash: the workflow drops what it has seen)."""
        pending = []
        async with self.pool.acquire() as conn, conn.transaction():
            for d in deliveries:
                row = await conn.fetchrow(
                    "INSERT INTO webhook_deliveries (id, organization_id, endpoint_id, event_id, event_type, payment_id, "
                    "payment_version, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                    "ON CONFLICT (endpoint_id, organization_id, event_id) DO UPDATE SET event_id = EXCLUDED.event_id "
                    "RETURNING id::text, status, generation",
                    uuid.uuid4(), d.organization_id, d.endpoint_id, d.event_id, d.event_type, d.payment_id,
                    d.payment_version, d.payload)
                if row["status"] == DeliveryStatus.PENDING:
                    pending.append((d, DeliveryRef(delivery_id=row["id"], payment_version=d.payment_version,
                                                   generation=row["generation"])))
        return pending

    async def attempt_view(self, delivery_id: str) -> AttemptView | None:
        row = await self.pool.fetchrow(
            "SELECT d.organization_id, d.endpoint_id, d.status, d.event_id, d.event_type, d.payload, e.url, "
            "coalesce(e.enabled, false) AS enabled, e.secret_encrypted, "
            "CASE WHEN e.previous_secret_until > now() THEN e.previous_secret_encrypted END AS previous "
            "FROM webhook_deliveries d LEFT JOIN webhook_endpoints e "
            "ON e.organization_id = d.organization_id AND e.id = d.endpoint_id WHERE d.id = $1::uuid", delivery_id)
        if row is None:
            return None
        sealed = [s for s in (row["secret_encrypted"], row["previous"]) if s is not None]
        return AttemptView(row["organization_id"], row["endpoint_id"], DeliveryStatus(row["status"]), row["event_id"],
                           row["event_type"], bytes(row["payload"]), row["url"], row["enabled"], sealed)

    async def record_attempt(self, delivery_id: str, *, ok: bool, status_code: int | None, error: str | None,
                             retry_in_seconds: float | None, disable_after_seconds: float) -> bool:
        """Record one attempt's outcome (``retry_in_seconds`` None: the delivery is finished).
        Returns True when this failure disabled the endpoint (failing for too long)."""
        now = datetime.now(UTC)
        status = DeliveryStatus.SUCCEEDED if ok else (
            DeliveryStatus.PENDING if retry_in_seconds is not None else DeliveryStatus.FAILED)
        next_at = now + timedelta(seconds=retry_in_seconds) if status is DeliveryStatus.PENDING else None
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2, last_status_code = $3, "
                "last_error = $4, next_attempt_at = $5, updated_at = now(), "
                "completed_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END "
                "WHERE id = $1::uuid RETURNING organization_id, endpoint_id",
                delivery_id, status.value, status_code, (error or "")[:MAX_ERROR_CHARS] or None, next_at)
            if row is None:
                return False
            key = (row["organization_id"], row["endpoint_id"])
            if ok:
                await conn.execute("UPDATE webhook_endpoints SET failing_since = NULL "
                                   "WHERE organization_id = $1 AND id = $2 AND failing_since IS NOT NULL", *key)
                return False
            await conn.execute("UPDATE webhook_endpoints SET failing_since = now() "
                               "WHERE organization_id = $1 AND id = $2 AND failing_since IS NULL", *key)
            disabled = await conn.fetchval(
                "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'failing continuously', "
                "updated_at = now() WHERE organization_id = $1 AND id = $2 AND enabled "
                "AND failing_since < now() - make_interval(secs => $3) RETURNING true", *key,
                float(disable_after_seconds))
            if disabled and status is DeliveryStatus.PENDING:  # no retry to a disabled endpoint
                await conn.execute("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, "
                                   "completed_at = now(), last_error = left(coalesce(last_error, '') "
                                   "|| ' (endpoint disabled)', $2) WHERE id = $1::uuid", delivery_id, MAX_ERROR_CHARS)
            return bool(disabled)

    async def deliveries(self, org: str, endpoint_id: str, *, limit: int = 50,
                         status: DeliveryStatus | None = None) -> list[Delivery]:
        rows = await self.pool.fetch(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE organization_id = $1 AND endpoint_id = $2 "
            f"AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, payment_version DESC LIMIT $4",
            org, endpoint_id, status.value if status else None, limit)
        return [_delivery(r) for r in rows]

    async def redeliver(self, org: str, endpoint_id: str, *, delivery_id: str | None = None,
                        failed_since: datetime | None = None, limit: int = 1000) -> list[tuple[str, DeliveryRef]]:
        """Put finished deliveries back to pending (one by id, or the failed ones since a
        time): ``[(payment id, ref)]`` for their workflows."""
        rows = await self.pool.fetch(
            "UPDATE webhook_deliveries SET status = 'pending', generation = generation + 1, next_attempt_at = now(), "
            "completed_at = NULL, updated_at = now() WHERE id IN (SELECT id FROM webhook_deliveries "
            "WHERE organization_id = $1 AND endpoint_id = $2 AND status <> 'pending' "
            "AND ($3::text IS NULL OR id::text = $3) "
            "AND ($4::timestamptz IS NULL OR (status = 'failed' AND created_at >= $4)) "
            "ORDER BY payment_id, payment_version LIMIT $5) "
            "RETURNING id::text, payment_id, payment_version, generation",
            org, endpoint_id, delivery_id, failed_since, limit)
        return [(r["payment_id"], DeliveryRef(delivery_id=r["id"], payment_version=r["payment_version"],
                                              generation=r["generation"])) for r in rows]

    async def delivery(self, org: str, endpoint_id: str, delivery_id: str) -> Delivery | None:
        row = await self.pool.fetchrow(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE organization_id = $1 AND endpoint_id = $2 "
            f"AND id::text = $3", org, endpoint_id, delivery_id)
        return _delivery(row) if row else None

    async def backlog(self) -> list[dict[str, Any]]:
        """Pending deliveries per endpoint and the oldest one's age (the metrics)."""
        rows = await self.pool.fetch(
            "SELECT endpoint_id, count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest "
            "FROM webhook_deliveries WHERE status = 'pending' GROUP BY endpoint_id")
        return [dict(r) for r in rows]

    async def disabled_endpoints(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM webhook_endpoints WHERE NOT enabled")
