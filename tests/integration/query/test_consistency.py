"""consistent_with: read-your-writes on search, get and statistics, against real MongoDB,
Redis and Temporal. Writes are projected with the projector's own write path
(``batch_writes.apply_batch``), which does not bump the cache epoch: exactly the state
between the projector's MongoDB commit and its Redis bump."""

from __future__ import annotations

import asyncio

import pytest

from services.query.adapters.batch_writes import apply_batch
from services.query.bootstrap import query_runtime
from services.query.handlers import NotCaughtUp
from services.query.queries import SearchQuery, StatisticsQuery
from services.query.temporal.client import PaymentQueryClient
from services.query.temporal.worker import build_worker
from shared.consistency import ConsistencyTokens, ForeignConsistencyToken, InvalidConsistencyToken
from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from shared.telemetry import QUERIES
from shared.temporal import connect
from tests.support.builders import snapshot
from tests.support.read_side import seed


@pytest.fixture
def tokens(qsettings) -> ConsistencyTokens:  # noqa: ANN001
    return ConsistencyTokens(qsettings.consistency_token_secret)


async def project(runtime, *payments, event=EventType.CREATED) -> None:  # noqa: ANN001
    cols = await runtime.read_model.active(fresh=True)
    await apply_batch(runtime.mongo, cols, [new_event(event, p) for p in payments])


def hits(kind: str) -> float:
    return QUERIES.labels(kind, "hit")._value.get()


async def test_search_waits_for_the_write_and_never_serves_an_older_cached_answer(runtime, api, auth, tokens):
    h = auth("org-a")
    await seed(runtime, [snapshot("old-1", "org-a")])
    assert (await api.get("/v1/payments", headers=h)).json()["total"] == 1  # cached under epoch E
    new = snapshot("new-1", "org-a", amount=4321)
    token = tokens.issue([new])

    async def project_later() -> None:
        await asyncio.sleep(0.3)
        await project(runtime, new)

    task = asyncio.create_task(project_later())
    waited = await api.get("/v1/payments", params={"consistent_with": token}, headers=h)
    await task
    assert waited.status_code == 200, waited.text
    assert waited.json()["total"] == 2 and "new-1" in [p["id"] for p in waited.json()["data"]]
    # The token read moved the epoch past the older answers: every later reader sees it.
    assert (await api.get("/v1/payments", headers=h)).json()["total"] == 2
    before = hits("search")
    again = await api.get("/v1/payments", params={"consistent_with": token}, headers=h)
    assert again.json() == waited.json()
    assert hits("search") == before + 1  # the second read of the token comes from the cache


async def test_a_token_for_an_already_projected_write_skips_a_stale_cache_entry(runtime, api, auth, tokens):
    """The race the guidance names: MongoDB has the write, Redis still the older answer."""
    h = auth("org-a")
    await seed(runtime, [snapshot("s-1", "org-a")])
    assert (await api.get("/v1/payments", headers=h)).json()["total"] == 1
    late = snapshot("s-2", "org-a")
    await project(runtime, late)
    stale = await api.get("/v1/payments", headers=h)
    assert stale.json()["total"] == 1  # the cache is behind MongoDB: what a token must not serve
    fresh = await api.get("/v1/payments", params={"consistent_with": tokens.issue([late])}, headers=h)
    assert fresh.json()["total"] == 2


async def test_get_and_statistics_with_a_token_include_the_write(runtime, api, auth, tokens):
    h = auth("org-a")
    first = snapshot("g-1", "org-a", amount=1000)
    await seed(runtime, [first])
    assert (await api.get("/v1/statistics", headers=h)).json()["count"] == 1
    assert (await api.get("/v1/payments/g-1", headers=h)).json()["version"] == 1
    done = first.model_copy(update={"version": 2, "status": PaymentStatus.COMPLETED})
    second = snapshot("g-2", "org-a", amount=500)
    await project(runtime, done, event=EventType.STATUS_CHANGED)
    await project(runtime, second)
    combined = [tokens.issue([done]), tokens.issue([second])]  # two writes, two tokens
    stats = (await api.get("/v1/statistics", params={"consistent_with": combined}, headers=h)).json()
    assert stats["count"] == 2 and stats["by_status"] == {"completed": 1, "processing": 1}
    assert stats["currencies"][0]["sum"] == 1500
    got = await api.get("/v1/payments/g-1", params={"consistent_with": combined[0]}, headers=h)
    assert got.json()["status"] == "completed" and got.json()["version"] == 2


async def test_a_deleted_payment_satisfies_its_token_through_the_tombstone(runtime, api, auth, tokens):
    h = auth("org-a")
    p = snapshot("d-1", "org-a")
    await seed(runtime, [p])
    deleted = snapshot("d-1", "org-a", version=2, deleted=True)
    await project(runtime, deleted, event=EventType.DELETED)
    token = tokens.issue([deleted])
    assert (await api.get("/v1/payments", params={"consistent_with": token}, headers=h)).json()["total"] == 0
    assert (await api.get("/v1/payments/d-1", params={"consistent_with": token}, headers=h)).status_code == 404


async def test_a_write_that_never_happened_is_409_after_the_bound(runtime, api, auth, tokens):
    token = tokens.issue([snapshot("never-1", "org-a", version=3)])
    response = await api.get("/v1/statistics", params={"consistent_with": token}, headers=auth("org-a"))
    assert response.status_code == 409, response.text
    body = response.json()
    assert response.headers["retry-after"] == "1" and body["type"].endswith("read-model-behind")
    assert body["behind"] == [{"payment_id": "never-1", "wanted_version": 3, "projected_version": None}]


async def test_another_organizations_token_reveals_nothing(runtime, api, auth, tokens):
    theirs = snapshot("b-1", "org-b")
    await seed(runtime, [theirs, snapshot("a-1", "org-a")])
    token = tokens.issue([theirs])
    for path in ("/v1/payments", "/v1/payments/a-1", "/v1/statistics"):
        response = await api.get(path, params={"consistent_with": token}, headers=auth("org-a"))
        assert response.status_code == 404, response.text
        assert "b-1" not in response.text and "org-b" not in response.text
        assert response.json()["type"].endswith("consistency-token-not-found")


@pytest.mark.parametrize(("bad", "status"), [("nope", 422), ("", 422), ("ct1.e30.AAAA", 400)])
async def test_a_malformed_or_forged_token_is_a_4xx_naming_the_parameter(api, auth, bad, status):
    """Not shaped like a token: 422 (the OpenAPI pattern); shaped like one but not ours: 400."""
    response = await api.get("/v1/payments", params={"consistent_with": bad}, headers=auth("org-a"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"].startswith("consistent_with")
    forged = ConsistencyTokens("another-deployment-secret!").issue([snapshot("x", "org-a")])
    assert (await api.get("/v1/statistics", params={"consistent_with": forged}, headers=auth("org-a"))).status_code == 400


async def test_tokens_work_with_redis_down(qsettings, runtime, tokens):
    p = snapshot("r-1", "org-a")
    async with query_runtime(qsettings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as dead:
        task = asyncio.create_task(dead.handlers.search("org-a", SearchQuery(), [tokens.issue([p])]))
        await asyncio.sleep(0.2)
        assert not task.done()
        await project(runtime, p)
        assert (await task).total == 1


async def test_query_workflow_takes_tokens(qsettings, runtime, tokens):
    p = snapshot("t-1", "org-a", amount=700)
    client = await connect(qsettings, with_metrics=False)
    async with build_worker(client, runtime.handlers, qsettings):
        facade = PaymentQueryClient(client, qsettings.query_task_queue)
        token = tokens.issue([p])
        task = asyncio.create_task(facade.search_payments("org-a", SearchQuery(), [token]))
        await asyncio.sleep(0.3)
        await project(runtime, p)
        assert [x.id for x in (await task).data] == ["t-1"]
        assert (await facade.payment_statistics("org-a", StatisticsQuery(), [token])).count == 1
        assert (await facade.get_payment("org-a", "t-1", [token])).amount == 700
        with pytest.raises(ForeignConsistencyToken):
            await facade.search_payments("org-b", SearchQuery(), [token])
        with pytest.raises(InvalidConsistencyToken):
            await facade.get_payment("org-a", "t-1", ["nope"])
        with pytest.raises(NotCaughtUp) as behind:
            await facade.payment_statistics("org-a", StatisticsQuery(), [tokens.issue([snapshot("t-9", "org-a")])])
        assert behind.value.behind == [("t-9", 1, None)]


async def test_openapi_documents_consistent_with(api):
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in ("/v1/payments", "/v1/payments/{payment_id}", "/v1/statistics"):
        operation = paths[path]["get"]
        [param] = [p for p in operation["parameters"] if p["name"] == "consistent_with"]
        assert param["schema"]["anyOf"][0]["type"] == "array" and "Consistency-Token" in param["description"]
        assert {"400", "404", "409"} <= set(operation["responses"]), path
