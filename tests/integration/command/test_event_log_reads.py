"""PostgreSQL's event log as a rebuild reads it (services/query/adapters/event_log.py, issue
23), on the command side's real database: one snapshot, streamed in batches; then exactly
what that snapshot could not see, whatever the relay did meanwhile."""

from __future__ import annotations

import uuid

from services.command import handlers
from services.command.commands import CreatePayment
from services.query.adapters.event_log import EventLog
from shared.events import parse_event


async def create(runtime, org: str) -> str:
    payment_id = f"log-{uuid.uuid4().hex[:10]}"
    await handlers.create(runtime.store, CreatePayment(command_id=f"c-{payment_id}", organization_id=org,
                                                       payment_id=payment_id, amount=100, currency="EUR"),
                          source=runtime.settings.event_source)
    return payment_id


def ids(batches: list[list[bytes]], org: str) -> set[str]:
    return {e.subject for e in (parse_event(raw) for batch in batches for raw in batch) if e.organizationid == org}


async def test_a_snapshot_streams_in_batches_and_the_catch_up_reads_what_it_could_not_see(db, runtime):
    org = f"org-log-{uuid.uuid4().hex[:6]}"
    old, fresh = await create(runtime, org), await create(runtime, org)
    async with db.pool.acquire() as conn:  # published long ago, and published just now
        await conn.execute("UPDATE outbox SET published_at = now() - interval '1 hour' WHERE payment_id = $1", old)
    log = EventLog(runtime.settings.database_url)
    async with log.snapshot() as snapshot:
        later = await create(runtime, org)  # committed after the snapshot began
        async with db.pool.acquire() as conn:
            await conn.execute("UPDATE outbox SET published_at = clock_timestamp() WHERE payment_id = $1", later)
        batches = [batch async for batch in snapshot.batches(1)]
        assert all(len(b) == 1 for b in batches) and len(batches) == snapshot.total
        assert ids(batches, org) == {old, fresh}
        caught_up = [batch async for batch in log.since(snapshot.started, 10)]
    # the unpublished one (the snapshot held it too: applying twice is harmless) and the later one
    assert ids(caught_up, org) == {fresh, later}
