"""What a consistency token costs a search once the read model has caught up.

    PAYMENTS_MONGO_URL=... PAYMENTS_REDIS_URL=... python -m bench.consistency -n 500

Same run, same process, same cached search (org-1 of 1000 payments, limit 20); samples
of the variants alternate so that load from other processes hits them alike:

* baseline: search without a token (cache hit);
* token, repeated: ``consistent_with`` a token for an already-projected write whose
  marker is set (what every read after the first one of a token costs: cache hit);
* token, first read: a fresh token for two other already-projected payments each time (the
  MongoDB version check, the cache-epoch bump, then a cache miss: the worst case of a
  caught-up read model), against its own baseline, the same search uncached (what any
  read costs right after the projector's own bump for the write).

Handler time in-process (what payments_query_duration_seconds measures) and HTTP time
through the FastAPI app in-process (auth, token decoding and HMAC included).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from bench.common import scratch_settings
from bench.projection import make_events
from services.query.adapters.batch_writes import apply_batch
from services.query.bootstrap import query_runtime
from services.query.entrypoints.http.app import create_app
from services.query.handlers import QueryHandlers
from services.query.queries import SearchQuery
from shared.auth import SCOPE_READ, mint_token
from shared.consistency import ConsistencyTokens


async def alternating(variants: dict[str, Callable[[], Awaitable[object]]], n: int,
                      warmup: int = 20) -> dict[str, list[float]]:
    """Latencies in ms, one sample of each variant in turn."""
    for fn in variants.values():
        for _ in range(warmup):
            await fn()
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n):
        for name, fn in variants.items():
            t = time.perf_counter()
            await fn()
            out[name].append((time.perf_counter() - t) * 1000)
    return out


def report(title: str, results: dict[str, list[float]], baselines: dict[str, str]) -> None:
    """``baselines``: variant -> the variant its p50 ratio is taken against."""
    print(title)
    for name, ms in results.items():
        q = statistics.quantiles(ms, n=100)
        base = baselines.get(name, name)
        ratio = q[49] / statistics.median(results[base])
        print(f"  {name:<38} p50 {q[49]:8.3f} ms  p99 {q[98]:8.3f} ms  ratio p50 {ratio:5.2f} vs {base!r}")


async def main(n: int) -> None:
    settings = scratch_settings()
    async with query_runtime(settings) as runtime:
        tokens = ConsistencyTokens(settings.consistency_token_secret)
        cols = await runtime.read_model.active(fresh=True)
        await runtime.read_model.ensure_indexes(cols)
        events = make_events(1000)
        for i in range(0, len(events), 500):
            await apply_batch(runtime.mongo, cols, events[i:i + 500])
        org1 = [e.data.payment for e in events if e.organizationid == "org-1"]  # 100 payments
        repeated = tokens.issue([org1[0]])
        # Each first read needs a token never read before: pairs of other payments.
        fresh = (tokens.issue(pair) for pair in itertools.combinations(org1[1:], 2))
        q = SearchQuery(limit=20, sort="-created_at")
        h = runtime.handlers
        uncached = QueryHandlers(runtime.read_model, None, max_wait=runtime.settings.read_wait_seconds)
        print(f"search (org-1 of 1000 payments, limit 20), n={n} per variant, samples alternate")
        report("handler, in-process", await alternating({
            "no token, cached": lambda: h.search("org-1", q),
            "token, caught up, repeated": lambda: h.search("org-1", q, [repeated]),
            "no token, uncached": lambda: uncached.search("org-1", q),
            "token, caught up, first read": lambda: h.search("org-1", q, [next(fresh)]),
        }, n), {"token, caught up, repeated": "no token, cached", "token, caught up, first read": "no token, uncached"})

        app = create_app(settings, runtime)
        bearer = mint_token("org-1", [SCOPE_READ], settings=settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://q",
                headers={"Authorization": f"Bearer {bearer}"}) as http:
            report("HTTP GET /v1/payments, in-process", await alternating({
                "no token, cached": lambda: http.get("/v1/payments", params={"limit": 20}),
                "token, caught up, repeated": lambda: http.get(
                    "/v1/payments", params={"limit": 20, "consistent_with": repeated}),
            }, n), {"token, caught up, repeated": "no token, cached"})
        await runtime.mongo.drop_database(settings.mongo_db)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="cost of consistent_with on a search once the read model caught up")
    parser.add_argument("-n", type=int, default=500, help="samples per variant")
    asyncio.run(main(parser.parse_args().n))
