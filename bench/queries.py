"""Query latency: cached / uncached handlers vs raw Redis GET and raw MongoDB find;
statistics at 1k vs 100k payments; HTTP fast path vs the Temporal query workflow.

    PAYMENTS_MONGO_URL=... PAYMENTS_REDIS_URL=... PAYMENTS_TEMPORAL_ADDRESS=... python -m bench.queries

Server time = time inside the query handler (what /metrics' payments_query_duration
measures), in-process, on 127.0.0.1. 1k payments are projected through the projection
code; for 100k the statistics buckets are written directly (computed by a brute-force
recount of the generated payments), since statistics read only buckets. Then (issue 26,
bench/search_cost.py) the uncached search against a raw find of the same filter and page,
per filter kind (``--only-cost`` runs just that table).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx

from bench.common import latencies, scratch_settings, summary
from bench.projection import make_events
from bench.search_cost import search_costs
from services.query.adapters.batch_writes import apply_batch
from services.query.adapters.read_queries import search_filter, sort_spec
from services.query.bootstrap import query_runtime
from services.query.entrypoints.http.app import create_app
from services.query.handlers import QueryHandlers
from services.query.queries import SearchQuery, StatisticsQuery
from services.query.temporal.client import PaymentQueryClient
from services.query.temporal.worker import build_worker
from shared.auth import SCOPE_READ, mint_token
from shared.temporal import connect


async def load_buckets(cols, n: int) -> None:  # noqa: ANN001
    base = datetime(2026, 1, 1, tzinfo=UTC)
    acc: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 10**18, 0])
    for i in range(n):  # one organization, 90 days, 3 currencies, 5 statuses
        day = (base + timedelta(days=i % 90)).strftime("%Y-%m-%d")
        key = ("org-s", day, ("EUR", "USD", "JPY")[i % 3],
               ("processing", "completed", "failed", "cancelled", "refunded")[i % 5])
        a = acc[key]
        amount = 100 + i % 9000
        a[0] += 1
        a[1] += amount
        a[2] = min(a[2], amount)
        a[3] = max(a[3], amount)
    await cols.statistics.insert_many([
        {"_id": "|".join(k), "organization_id": k[0], "day": k[1], "currency": k[2], "status": k[3],
         "count": c, "sum": s, "min": lo, "max": hi} for k, (c, s, lo, hi) in acc.items()])


async def main(n: int, cost_payments: int, only_cost: bool) -> None:
    if not only_cost:
        await latency(n)
    if cost_payments:
        async with query_runtime(scratch_settings()) as runtime:
            await runtime.read_model.ensure_indexes()
            await search_costs(runtime, cost_payments, max(30, n // 10))
            await runtime.mongo.drop_database(runtime.settings.mongo_db)


async def latency(n: int) -> None:
    settings = scratch_settings(query_task_queue=f"bench-q-{uuid.uuid4().hex[:6]}")
    async with query_runtime(settings) as runtime:
        cols = await runtime.read_model.active(fresh=True)
        await runtime.read_model.ensure_indexes(cols)
        events = make_events(1000)
        for i in range(0, len(events), 500):
            await apply_batch(runtime.mongo, cols, events[i:i + 500])
        q = SearchQuery(limit=20, sort="-created_at")
        uncached = QueryHandlers(runtime.read_model, None, max_wait=runtime.settings.read_wait_seconds)
        await runtime.cache.redis.set("bench:raw", (await runtime.handlers.search("org-1", q)).model_dump_json())
        flt = search_filter("org-1", q)
        print(f"search (org-1 of 1000 payments, limit 20), n={n}")
        print(summary("raw Redis GET", await latencies(lambda: runtime.cache.redis.get("bench:raw"), n)))
        print(summary("search handler, cached (hit)", await latencies(lambda: runtime.handlers.search("org-1", q), n)))
        print(summary("raw MongoDB find (limit 21)",
                      await latencies(lambda: cols.payments.find(flt, sort=sort_spec(q), limit=21).to_list(), n)))
        print(summary("search handler, uncached", await latencies(lambda: uncached.search("org-1", q), n)))
        print(summary("get by id handler, cached", await latencies(lambda: runtime.handlers.get("org-1", "b0000001"), n)))

        sq = StatisticsQuery(created_from=datetime(2026, 1, 1).date(), created_to=datetime(2026, 3, 31).date())
        for size in (1000, 100_000):
            await cols.statistics.delete_many({"organization_id": "org-s"})
            await load_buckets(cols, size)
            print(summary(f"statistics uncached, {size} payments",
                          await latencies(lambda: uncached.statistics("org-s", sq), max(50, n // 4))))

        app = create_app(settings, runtime)
        token = mint_token("org-1", [SCOPE_READ], settings=settings)
        client = await connect(settings, with_metrics=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://q",
                headers={"Authorization": f"Bearer {token}"}) as http, build_worker(client, runtime.handlers, settings):
            facade = PaymentQueryClient(client, settings.query_task_queue)
            print(summary("HTTP GET /v1/payments (cached, in-process)",
                          await latencies(lambda: http.get("/v1/payments", params={"limit": 20}), n)))
            print(summary("Temporal SearchPayments workflow",
                          await latencies(lambda: facade.search_payments("org-1", q), max(50, n // 10), warmup=5)))
        await runtime.mongo.drop_database(settings.mongo_db)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="query latency benchmarks")
    parser.add_argument("-n", type=int, default=500, help="samples per measurement")
    parser.add_argument("--cost-payments", type=int, default=10_000,
                        help="payments of the uncached-search-cost table (half in the searched organization); 0: skip")
    parser.add_argument("--only-cost", action="store_true", help="only the uncached-search-cost table")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.cost_payments, args.only_cost))
