"""Export throughput and memory (issue 26): ``GET /v1/payments/export``'s path (the
handler's stream of the read model's cursor, formatted by services/query/export_format.py)
against a raw MongoDB cursor dump of the same documents (same filter, order and batch
size, each document written as JSON), same run, same database.

    PAYMENTS_MONGO_URL=... PAYMENTS_REDIS_URL=... python -m bench.export --payments 100000

Rows/s from untraced passes; peak memory from a second pass of each under tracemalloc
(Python allocations of this process: what an export holds), at a quarter of the payments
and at all of them: constant memory shows as the same peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from bench.common import scratch_settings
from services.query.adapters.batch_writes import apply_batch
from services.query.adapters.read_model import EXPORT_BATCH
from services.query.adapters.read_queries import search_filter, sort_spec
from services.query.bootstrap import query_runtime
from services.query.export_format import ExportFormat, chunks
from services.query.queries import ExportQuery
from shared.events import EventType, new_event
from shared.payment import PaymentSnapshot


class Sink:
    """Counts what a client would receive, keeps none of it."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> None:
        self.bytes += len(text.encode())


def payments(org: str, n: int, start: int = 0) -> list:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    return [new_event(EventType.CREATED, PaymentSnapshot(
        id=f"x{i:07d}", organization_id=org, user_id=f"u{i % 50}", amount=100 + i % 9000,
        currency=("EUR", "USD", "JPY")[i % 3], status="processing", version=1, description=f"invoice {i}",
        metadata={"order": f"o-{i}"}, created_at=base + timedelta(seconds=i), updated_at=base + timedelta(seconds=i)))
        for i in range(start, start + n)]


async def raw_dump(cols, org: str, sink: Sink) -> int:  # noqa: ANN001
    q = ExportQuery().search
    rows = 0
    async for doc in cols.payments.find(search_filter(org, q), sort=sort_spec(q), batch_size=EXPORT_BATCH):
        sink.write(json.dumps(doc, default=str) + "\n")
        rows += 1
    return rows


async def export(runtime, org: str, fmt: ExportFormat, sink: Sink) -> int:  # noqa: ANN001
    stream = await runtime.handlers.export(org, ExportQuery(format=fmt))
    async for chunk in chunks(stream, fmt):
        sink.write(chunk)
    return sink.bytes


async def measure(name: str, run, rows: int) -> tuple[float, float]:  # noqa: ANN001
    t = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - t
    tracemalloc.start()
    tracemalloc.reset_peak()
    await run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  {name:<28} {rows / elapsed:10,.0f} rows/s   peak {peak / 2**20:7.2f} MiB")
    return rows / elapsed, peak


async def main(n: int) -> None:
    async with query_runtime(scratch_settings()) as runtime:
        await runtime.read_model.ensure_indexes()
        cols = await runtime.read_model.active(fresh=True)
        loaded = 0
        for size in (n // 4, n):
            while loaded < size:  # the organization grows from n/4 to n payments
                batch = min(2000, size - loaded)
                await apply_batch(runtime.mongo, cols, payments("org-x", batch, loaded))
                loaded += batch
            print(f"export of {size:,} payments (one organization, batches of {EXPORT_BATCH}):")
            await measure("raw cursor dump (JSON)", lambda: raw_dump(cols, "org-x", Sink()), size)
            await measure("export CSV", lambda: export(runtime, "org-x", ExportFormat.CSV, Sink()), size)
            await measure("export NDJSON", lambda: export(runtime, "org-x", ExportFormat.NDJSON, Sink()), size)
        await runtime.mongo.drop_database(runtime.settings.mongo_db)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="export throughput and memory vs a raw cursor dump")
    parser.add_argument("--payments", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().payments))
