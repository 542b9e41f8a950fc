"""Uncached search vs a raw MongoDB find of the same filter and page, per filter kind
(issue 26), called by bench/queries.py. The raw find is what the read model sends
(filter, sort, limit + 1, no hint by default); the search handler adds the active
generation's look-up, ``total``, the cursor and the representation. Samples alternate
(raw, handler, raw, ...) so load drifts hit both alike."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from services.query.adapters.batch_writes import apply_batch
from services.query.adapters.read_queries import keyset_filter, search_filter, sort_spec
from services.query.handlers import QueryHandlers
from services.query.queries import SearchQuery
from shared.events import EventType, new_event
from shared.payment import PaymentSnapshot

ORG = "org-c"
KINDS = {  # filter kind -> the search
    "organization only, newest first": SearchQuery(),
    "status (indexed filter)": SearchQuery(status="completed"),
    "user_id (indexed filter)": SearchQuery(user_id="u7"),
    "amount range, by amount": SearchQuery(min_amount=1000, max_amount=5000, sort="amount"),
    "query: AND of three clauses": SearchQuery(query="currency:EUR AND amount>=1000 AND -status:failed"),
    "query: OR of two clauses": SearchQuery(query="status:failed OR currency:JPY"),
    "query: metadata clause": SearchQuery(query="metadata['order']:'o-17'"),
    "query: description substring": SearchQuery(query="description~'invoice 4'"),
}


def events(n: int) -> list:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    statuses = ("processing", "completed", "failed")
    return [new_event(EventType.CREATED, PaymentSnapshot(
        id=f"s{i:07d}", organization_id=ORG if i % 2 else "org-other", user_id=f"u{i % 50}", amount=100 + i % 9000,
        currency=("EUR", "USD", "JPY")[i % 3], status=statuses[i % 3], version=1, description=f"invoice {i}",
        metadata={"order": f"o-{i % 400}"}, created_at=base + timedelta(minutes=i),
        updated_at=base + timedelta(minutes=i))) for i in range(n)]


async def search_costs(runtime, n_payments: int, samples: int) -> None:  # noqa: ANN001
    cols = await runtime.read_model.active(fresh=True)
    evs = events(n_payments)
    for i in range(0, len(evs), 1000):
        await apply_batch(runtime.mongo, cols, evs[i:i + 1000])
    uncached = QueryHandlers(runtime.read_model, None, max_wait=5.0)
    read_model = runtime.read_model
    hinted = QueryHandlers(type(read_model)(read_model.db, read_model.cursor_key, hints=True), None, max_wait=5.0)
    print(f"\nuncached search vs raw find, {n_payments // 2} payments in {ORG} ({n_payments} in the collection), "
          f"limit 20, {samples} alternating samples")
    print(f"{'filter kind':<36} {'raw find p50':>12} {'search p50':>11} {'ratio':>6} {'total':>6}"
          f" {'hinted p50':>11} {'ratio':>6}")
    for name, q in KINDS.items():
        await _row(name, q, cols, (uncached, hinted), samples)
    first = await uncached.search(ORG, SearchQuery())
    await _row("organization only, page 2 (cursor)", SearchQuery(starting_after=first.next_cursor), cols,
               (uncached, hinted), samples, after=first.data[-1])


async def _row(name, q, cols, handlers, samples, after=None) -> None:  # noqa: ANN001
    """``handlers``: the default search (no hints) and one with PAYMENTS_MONGO_INDEX_HINTS."""
    flt = search_filter(ORG, q)
    if after is not None:
        last = await cols.payments.find_one({"organization_id": ORG, "id": after.id})
        flt = {"$and": [flt, keyset_filter(q, (last[q.sort_field], last["_id"]))]}
    ms: list[list[float]] = [[], [], []]
    for i in range(samples + 5):
        t = [time.perf_counter()]
        await cols.payments.find(flt, sort=sort_spec(q), limit=q.limit + 1).to_list()
        t.append(time.perf_counter())
        answer = await handlers[0].search(ORG, q)
        t.append(time.perf_counter())
        await handlers[1].search(ORG, q)
        t.append(time.perf_counter())
        if i >= 5:  # warm-up
            for k in range(3):
                ms[k].append((t[k + 1] - t[k]) * 1000)
    raw, search, hinted = (statistics.median(m) for m in ms)
    print(f"{name:<36} {raw:9.2f} ms {search:8.2f} ms {search / raw:6.2f} {answer.total:6d}"
          f" {hinted:8.2f} ms {hinted / raw:6.2f}")
