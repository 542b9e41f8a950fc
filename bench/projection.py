"""Projection throughput vs a raw bulk upsert of the same documents into the same MongoDB.

    payments stack up --detach
    python -m bench.projection --events 5000 --batch 500

Both sides write the same payment documents in batches of the same size; the projection
side additionally reads the stored versions, keeps tombstones and statistics, all in one
transaction per batch (exactly what the projector does per Kafka batch). Then, unless
``--no-kafka``, the same events go end to end through Kafka into a real ``payments
projector`` process on the same MongoDB (bench/projection_e2e.py), against both.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

from pymongo import ReplaceOne

from bench.common import scratch_settings
from bench.projection_e2e import end_to_end, report
from services.query import domain
from services.query.adapters import batch_writes
from services.query.adapters.batch_writes import apply_batch
from services.query.bootstrap import query_runtime
from shared.events import EventType, PaymentEvent, new_event
from shared.payment import PaymentSnapshot


def make_events(n: int) -> list:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    return [new_event(EventType.CREATED, PaymentSnapshot(
        id=f"b{i:07d}", organization_id=f"org-{i % 10}", user_id=f"u{i % 100}", amount=100 + i % 9000,
        currency=("EUR", "USD", "JPY")[i % 3], status="processing", version=1,
        created_at=base + timedelta(minutes=i), updated_at=base + timedelta(minutes=i))) for i in range(n)]


async def main(n: int, batch: int, kafka: bool = True) -> None:
    settings = scratch_settings()
    async with query_runtime(settings) as runtime:
        events = make_events(n)
        batches = [events[i:i + batch] for i in range(0, n, batch)]
        raw = runtime.read_model.db["raw_upsert"]
        now = datetime.now(UTC)

        def upsert(event: PaymentEvent) -> ReplaceOne:
            doc = domain.payment_document(event, now)
            return ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)

        t = time.perf_counter()
        for b in batches:
            await raw.bulk_write([upsert(e) for e in b], ordered=False)
        raw_s = time.perf_counter() - t
        cols = await runtime.read_model.active(fresh=True)
        await runtime.read_model.ensure_indexes(cols)
        await raw.create_indexes(projection_indexes())
        await raw.delete_many({})
        t = time.perf_counter()
        for b in batches:
            await raw.bulk_write([upsert(e) for e in b], ordered=False)
        raw_idx_s = time.perf_counter() - t
        # The same projection without the history write (issue 23), first, into collections of its own.
        bare = runtime.read_model.collections("nohistory")
        await runtime.read_model.ensure_indexes(bare)
        with mock.patch.object(batch_writes, "write_history", _no_history):
            t = time.perf_counter()
            for b in batches:
                await apply_batch(runtime.mongo, bare, b)
            bare_s = time.perf_counter() - t
        t = time.perf_counter()
        for b in batches:
            await apply_batch(runtime.mongo, cols, b)
        proj_s = time.perf_counter() - t
        t = time.perf_counter()
        for b in batches:  # a full replay of the same stream: every event is a duplicate
            await apply_batch(runtime.mongo, cols, b)
        dup_s = time.perf_counter() - t
        print(f"events {n}, batch {batch}")
        print(f"raw bulk upsert, no secondary indexes : {n / raw_s:9.0f} docs/s")
        print(f"raw bulk upsert, same indexes         : {n / raw_idx_s:9.0f} docs/s   (baseline)")
        print(f"projection (txn + tombstones + stats) : {n / proj_s:9.0f} events/s  "
              f"= {100 * raw_idx_s / proj_s:.0f} % of baseline")
        print(f"replayed duplicates                   : {n / dup_s:9.0f} events/s")
        print(f"projection without the history write  : {n / bare_s:9.0f} events/s  "
              f"(with it: {100 * bare_s / proj_s:.0f} %)", flush=True)
        await runtime.mongo.drop_database(settings.mongo_db)
    if kafka:
        e2e = await end_to_end(settings, events, batch)
        print("\n".join(report(e2e, n / proj_s, n / raw_idx_s)))


async def _no_history(*_: object, **__: object) -> None:
    return None


def projection_indexes() -> list:
    from services.query.adapters.read_model import PAYMENT_INDEXES

    return PAYMENT_INDEXES


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--no-kafka", action="store_true", help="skip the end-to-end run through Kafka")
    args = parser.parse_args()
    if not 1 <= args.events <= 10_000:
        parser.error("--events must be between 1 and 10000 (bounded load)")
    asyncio.run(main(args.events, args.batch, kafka=not args.no_kafka))
