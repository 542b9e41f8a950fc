"""HTTP API, cache, Temporal and the read model against the real stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from services.query.adapters.batch_writes import apply_batch
from services.query.adapters.cache import epoch_key
from services.query.adapters.read_model import MongoReadModel
from services.query.bootstrap import query_runtime
from services.query.queries import SearchQuery, StatisticsQuery
from services.query.temporal.client import PaymentQueryClient
from services.query.temporal.worker import build_worker
from shared.events import EventType, new_event
from shared.payment import PaymentStatus, Refund
from shared.telemetry import CACHE_ERRORS, QUERIES
from shared.temporal import connect
from tests.support.builders import newest_versions, recount, snapshot
from tests.support.children import eventually
from tests.support.read_side import payments_from_mongo, payments_of, seed, statistics_from_mongo
from tests.support.strategies import deliveries


async def test_search_filters_sorts_and_paginates_by_cursor_and_page(runtime, api, auth):
    await seed(runtime, payments_of("org-a", 25) + payments_of("org-b", 3))
    h = auth("org-a")
    seen, cursor = [], None
    while True:
        params = {"limit": 7, "sort": "-amount"} | ({"starting_after": cursor} if cursor else {})
        body = (await api.get("/v1/payments", params=params, headers=h)).json()
        assert body["total"] == 25
        seen += [(d["amount"], d["id"]) for d in body["data"]]
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if not cursor:
            break
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 25
    page2 = (await api.get("/v1/payments", params={"page": 2, "size": 10, "sort": "created_at"}, headers=h)).json()
    assert [d["id"] for d in page2["data"]] == [f"org-a-{i:03d}" for i in range(10, 20)]
    flt = (await api.get("/v1/payments", params={"user_id": "u1", "min_amount": 200, "max_amount": 400}, headers=h))
    assert all(d["user_id"] == "u1" and 200 <= d["amount"] <= 400 for d in flt.json()["data"])
    assert flt.json()["total"] == sum(1 for p in payments_of("org-a", 25) if p.user_id == "u1" and 200 <= p.amount <= 400)
    bad = await api.get("/v1/payments", params={"sort": "description"}, headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert (await api.get("/v1/payments", params={"starting_after": "nope"}, headers=h)).status_code == 400


async def test_organizations_never_see_each_other(runtime, api, auth):
    await seed(runtime, payments_of("org-a", 2) + payments_of("org-b", 1))
    mine = await api.get("/v1/payments/org-a-000", headers=auth("org-a"))
    assert mine.status_code == 200 and mine.json()["organization_id"] == "org-a"
    theirs = await api.get("/v1/payments/org-a-000", headers=auth("org-b"))
    assert theirs.status_code == 404 and theirs.json()["type"].endswith("payment-not-found")
    assert [d["id"] for d in (await api.get("/v1/payments", headers=auth("org-b"))).json()["data"]] == ["org-b-000"]
    assert (await api.get("/v1/statistics", headers=auth("org-b"))).json()["count"] == 1
    assert (await api.get("/v1/statistics", headers=auth("org-c"))).json()["count"] == 0
    assert (await api.get("/v1/payments")).status_code == 401


async def test_statistics_come_from_the_aggregates(runtime, api, auth):
    await seed(runtime, payments_of("org-a", 10))
    body = (await api.get("/v1/statistics", params={"created_from": "2026-03-01", "created_to": "2026-03-01"},
                          headers=auth("org-a"))).json()
    amounts = [p.amount for p in payments_of("org-a", 10)]
    [eur] = body["currencies"]
    assert (eur["count"], eur["sum"], eur["min"], eur["max"]) == (10, sum(amounts), min(amounts), max(amounts))
    assert body["by_status"] == {"processing": 10}
    empty = (await api.get("/v1/statistics", params={"created_from": "2026-03-02"}, headers=auth("org-a"))).json()
    assert empty["count"] == 0 and empty["currencies"] == []


async def test_min_version_waits_for_the_projection(runtime, api, auth):
    p = snapshot("mv-1", "org-a")
    await seed(runtime, [p])

    async def project_later() -> None:
        await asyncio.sleep(0.3)
        cols = await runtime.read_model.active(fresh=True)
        done = p.model_copy(update={"version": 2, "status": PaymentStatus.COMPLETED})
        await apply_batch(runtime.mongo, cols, [new_event(EventType.STATUS_CHANGED, done)])

    task = asyncio.create_task(project_later())
    got = await api.get("/v1/payments/mv-1", params={"min_version": 2}, headers=auth("org-a"))
    await task
    assert got.status_code == 200 and got.json()["version"] == 2 and got.json()["status"] == "completed"
    late = await api.get("/v1/payments/mv-2", params={"min_version": 1}, headers=auth("org-a"))
    assert late.status_code == 409 and late.json()["wanted_version"] == 1


async def test_cached_search_is_invalidated_by_projection(qsettings, runtime, api, auth, producer, projector):
    p = snapshot("c-1", "org-a", amount=500)
    created = new_event(EventType.CREATED, p)
    epoch = epoch_key(runtime.cache.prefix, "org-a")
    initial = int(await runtime.cache.redis.get(epoch) or 0)
    await producer.send_and_wait(qsettings.events_topic, created.to_json_bytes(), key=created.subject.encode())
    h = auth("org-a")

    async def visible() -> bool:
        return (await api.get("/v1/payments", headers=h)).json()["total"] == 1

    await eventually(visible)

    async def epoch_bumped() -> bool:  # the projector bumps just after its Mongo write
        return int(await runtime.cache.redis.get(epoch) or 0) > initial

    await eventually(epoch_bumped)
    await api.get("/v1/payments", headers=h)  # fills the cache under the current epoch
    hits = QUERIES.labels("search", "hit")._value.get()
    assert (await api.get("/v1/payments", headers=h)).json()["data"][0]["amount"] == 500
    assert QUERIES.labels("search", "hit")._value.get() == hits + 1  # served from Redis
    before = int(await runtime.cache.redis.get(epoch) or 0)
    updated = new_event(EventType.UPDATED, p.model_copy(update={"version": 2, "amount": 777}))
    await producer.send_and_wait(qsettings.events_topic, updated.to_json_bytes(), key=updated.subject.encode())

    async def bumped() -> bool:
        return int(await runtime.cache.redis.get(epoch) or 0) > before

    await eventually(bumped, what="the projector to bump org-a's cache epoch")
    assert (await api.get("/v1/payments", headers=h)).json()["data"][0]["amount"] == 777


async def test_queries_answer_with_redis_down(qsettings, runtime, auth):
    await seed(runtime, payments_of("org-a", 3))
    errors = CACHE_ERRORS._value.get()
    async with query_runtime(qsettings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as dead:
        found = await dead.handlers.search("org-a", SearchQuery())
        assert found.total == 3
        assert (await dead.handlers.get("org-a", "org-a-001")).id == "org-a-001"
        assert (await dead.handlers.statistics("org-a", StatisticsQuery())).count == 3
        assert CACHE_ERRORS._value.get() > errors


async def test_temporal_query_workflow_answers_like_http(qsettings, runtime, api, auth):
    await seed(runtime, payments_of("org-a", 5))
    client = await connect(qsettings, with_metrics=False)
    async with build_worker(client, runtime.handlers, qsettings):
        facade = PaymentQueryClient(client, qsettings.query_task_queue)
        via_temporal = await facade.search_payments("org-a", SearchQuery(limit=3, sort="amount"))
        via_http = (await api.get("/v1/payments", params={"limit": 3, "sort": "amount"}, headers=auth("org-a"))).json()
        assert via_temporal.model_dump(mode="json") == via_http
        stats = await facade.payment_statistics("org-a", StatisticsQuery())
        assert stats.model_dump(mode="json") == (await api.get("/v1/statistics", headers=auth("org-a"))).json()
        assert (await facade.get_payment("org-a", "org-a-002")).amount == payments_of("org-a", 5)[2].amount
        assert await facade.get_payment("org-b", "org-a-002") is None


async def test_a_crash_between_two_writes_leaves_nothing_half_written(runtime):
    cols = await runtime.read_model.active(fresh=True)

    class Exploding:
        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(cols.statistics, name)

        async def bulk_write(self, *a, **kw):  # noqa: ANN002, ANN003, ANN204
            raise RuntimeError("crash after the payment write, before the statistics write")

    broken = type(cols)(cols.generation, cols.payments, cols.tombstones, Exploding(), cols.history)
    try:
        await apply_batch(runtime.mongo, broken, [new_event(EventType.CREATED, snapshot("crash-1"))])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the injected crash did not happen")
    assert await cols.payments.count_documents({}) == 0
    assert await cols.history.count_documents({}) == 0
    await apply_batch(runtime.mongo, cols, [new_event(EventType.CREATED, snapshot("crash-1"))])
    assert await statistics_from_mongo(runtime) == recount(await payments_from_mongo(runtime))


@hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=deliveries(max_payments=4))
async def test_property_on_real_mongodb(runtime, case):  # noqa: ANN001
    lives, batches = case
    rm: MongoReadModel = runtime.read_model
    generation = f"h{uuid.uuid4().hex[:8]}"
    cols = rm.collections(generation)
    await rm.ensure_indexes(cols)
    await rm.activate(generation)
    for batch in batches:
        await apply_batch(runtime.mongo, cols, batch)
    newest = newest_versions(lives)
    live = {pid: e.paymentversion for pid, e in newest.items() if e.type is not EventType.DELETED}
    assert {d["_id"]: d["version"] async for d in cols.payments.find()} == live
    assert await statistics_from_mongo(runtime) == recount(await payments_from_mongo(runtime))
    await rm.drop(generation)


@pytest.mark.parametrize(
    "params",
    [{"page": 10**28}, {"min_amount": 10**30}, {"max_amount": 2**63}, {"page": 0}, {"limit": 101}],
)
async def test_out_of_range_parameters_are_422_not_500(api, auth, params):
    response = await api.get("/v1/payments", params=params, headers=auth("org-a"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_statistics_sum_the_refunds_exactly_through_duplicates_and_replays(qsettings, runtime, api, auth):
    """A payment refunded twice, one refunded in full, one completed: refunded and net per
    currency, status and day, unchanged by the same events delivered again in any order."""
    org = f"org-rf-{uuid.uuid4().hex[:6]}"
    lives = []
    for pid, amount, refunds in (("a", 1000, [300, 200]), ("b", 400, [400]), ("c", 700, [])):
        p = snapshot(pid, org, amount=amount)
        life = [new_event(EventType.CREATED, p)]
        p = p.model_copy(update={"status": PaymentStatus.COMPLETED, "version": 2})
        life.append(new_event(EventType.STATUS_CHANGED, p))
        for i, part in enumerate(refunds):
            refund = Refund(id=f"rf_{pid}{i}", amount=part, created_at=p.created_at, actor="tests")
            refunded = p.amount_refunded + part
            p = p.model_validate({**p.model_dump(), "version": p.version + 1, "amount_refunded": refunded,
                                  "refunds": [*p.model_dump()["refunds"], refund.model_dump()],
                                  "status": "refunded" if refunded == amount else "partially_refunded"})
            life.append(new_event(EventType.REFUNDED, p, refund=refund))
        lives.append(life)
    cols = await runtime.read_model.active(fresh=True)
    events = [e for life in lives for e in life]
    await apply_batch(runtime.mongo, cols, events)
    await apply_batch(runtime.mongo, cols, list(reversed(events)))  # duplicates, replayed out of order
    stored = [p for p in await payments_from_mongo(runtime) if p.organization_id == org]
    mine = {k: v for k, v in (await statistics_from_mongo(runtime)).items() if k.organization_id == org}
    assert mine == recount(stored)
    body = (await api.get("/v1/statistics", headers=auth(org))).json()
    [eur] = body["currencies"]
    assert (eur["sum"], eur["refunded"], eur["net"]) == (2100, 900, 1200)
    by_status = {s["status"]: (s["count"], s["refunded"], s["net"]) for s in eur["by_status"]}
    assert by_status == {"partially_refunded": (1, 500, 500), "refunded": (1, 400, 0), "completed": (1, 0, 700)}
    assert [(d["refunded"], d["net"]) for d in eur["by_day"]] == [(900, 1200)]
    assert body["by_status"] == {"completed": 1, "partially_refunded": 1, "refunded": 1}
    one = (await api.get("/v1/payments/a", headers=auth(org))).json()
    assert (one["amount_refunded"], [r["amount"] for r in one["refunds"]]) == (500, [300, 200])
    client = await connect(qsettings, with_metrics=False)
    async with build_worker(client, runtime.handlers, qsettings):  # the query workflow, as the facade reads
        via_temporal = await PaymentQueryClient(client, qsettings.query_task_queue).payment_statistics(
            org, StatisticsQuery())
    assert via_temporal.model_dump(mode="json") == body and via_temporal.currencies[0].net == 1200
