"""The search query language against the real read model (MongoDB, Redis, Kafka, the
projector, Temporal): answers equal a Python evaluation, errors name their column, cursors
stay bound to the query, a metadata clause uses its index, read-your-writes holds."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from services.query.adapters.read_model import choose_index
from services.query.adapters.read_queries import search_filter, sort_spec
from services.query.queries import SearchQuery
from services.query.search_language import parse
from services.query.temporal.client import PaymentQueryClient
from services.query.temporal.worker import build_worker
from shared.consistency import ConsistencyTokens
from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from shared.payment_view import Payment
from shared.temporal import connect
from tests.support.builders import snapshot
from tests.support.read_side import seed
from tests.support.search_oracle import (
    AMOUNTS,
    CURRENCIES,
    META_KEYS,
    META_VALUES,
    STATUSES,
    USERS,
    WORDS,
    matches,
    moment,
    queries,
)


def varied(org: str, n: int, seed_: int = 7) -> list:
    """Payments whose values the random queries draw from (tests/support/search_oracle.py)."""
    rnd = random.Random(seed_)
    made = []
    for i in range(n):
        meta = {k: rnd.choice(META_VALUES) for k in rnd.sample(META_KEYS, rnd.randint(0, len(META_KEYS)))}
        words = " ".join(rnd.sample(WORDS, rnd.randint(0, 2)))
        p = snapshot(f"p-{i:03d}", org, amount=max(1, rnd.choice(AMOUNTS) + rnd.choice([-1, 0, 0, 1])),
                     currency=rnd.choice(CURRENCIES), status=PaymentStatus(rnd.choice(STATUSES)),
                     created_at=moment(i), user_id=rnd.choice(USERS))
        made.append(p.model_copy(update={"description": f"{words} {i}".strip(), "metadata": meta}))
    return made


async def search_all(api, headers, **params) -> list[str]:  # noqa: ANN001, ANN003
    """Ids of every page of a search, following the cursors."""
    ids, cursor = [], None
    while True:
        page = await api.get("/v1/payments", params=params | ({"starting_after": cursor} if cursor else {}),
                             headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [d["id"] for d in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            assert body["total"] == len(ids)
            return ids


@pytest.fixture
async def seeded(runtime) -> list[Payment]:  # noqa: ANN001
    mine = varied("org-a", 45)
    await seed(runtime, mine + varied("org-b", 15, seed_=8))
    return [Payment.of(p) for p in mine]


async def test_each_field_operator_and_joint_against_the_read_model(seeded, api, auth):
    h = auth("org-a")
    for text in ["status:completed", "-status:completed", "currency:EUR AND amount>=100", "amount<100 OR amount>1000",
                 "created:2026-03-02", "created>2026-03-02", "created<=2026-03-01T23:46:00Z", "user_id:u-2",
                 "description~'a.b'", "description~\"(x)\"", "description~'it\\'s'", "metadata['order']:'x-1'",
                 "metadata['a b']:true OR metadata['ref']:null", "-metadata['order']:1", "id:p-003 OR id:p-001"]:
        want = [p.id for p in sorted(seeded, key=lambda p: p.created_at) if matches(parse(text), p)]
        got = await search_all(api, h, query=text, limit=7, sort="created_at")
        assert got == want, text
    assert want == ["p-001", "p-003"]
    both = await search_all(api, h, query="amount>=100", currency="EUR", status="failed")
    assert set(both) == {p.id for p in seeded if p.amount >= 100 and p.currency == "EUR" and p.status == "failed"}


@hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=queries())
async def test_property_the_api_answers_what_python_computes(seeded, api, auth, text):  # noqa: ANN001
    want = {p.id for p in seeded if matches(parse(text), p)}
    response = await api.get("/v1/payments", params={"query": text, "limit": 100}, headers=auth("org-a"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert {d["id"] for d in body["data"]} == want and body["total"] == len(want), text


async def test_invalid_queries_are_422_naming_query_column_and_expectation(api, auth):
    for text, column in [("status:paid", 8), ("amount>1 AND b:1 OR c:2", 18), ("metadata['x'", 13), ("x" * 1001, None)]:
        response = await api.get("/v1/payments", params={"query": text}, headers=auth("org-a"))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"].split(".")[-1] == "query", error
        if column is not None:
            assert error["column"] == column and error["expected"], error


async def test_a_cursor_is_bound_to_its_query(seeded, api, auth):
    h = auth("org-a")
    first = (await api.get("/v1/payments", params={"query": "amount>0", "limit": 5}, headers=h)).json()
    assert first["has_more"]
    other = await api.get("/v1/payments", params={"query": "amount>1", "limit": 5,
                                                  "starting_after": first["next_cursor"]}, headers=h)
    assert other.status_code == 400 and other.json()["type"].endswith("invalid-cursor")
    same = await api.get("/v1/payments", params={"query": "amount>0", "limit": 5,
                                                 "starting_after": first["next_cursor"]}, headers=h)
    assert same.status_code == 200


@pytest.mark.parametrize(("text", "hints"), [("metadata['order']:'x-1'", False),
                                             ("metadata['order']:'x-1' AND amount>1", True)], ids=["planned", "hinted"])
async def test_a_metadata_clause_scans_its_index_not_the_organization(seeded, runtime, text, hints):  # noqa: ANN001
    """As the read model sends it: the server's own plan (the default; SecantusDB plans an
    index for plain equalities only) or, with PAYMENTS_MONGO_INDEX_HINTS, choose_index's hint."""
    q = SearchQuery(query=text, sort="-created_at")
    flt = search_filter("org-a", q)
    hint = choose_index(flt, q.sort_field, q.expression)
    assert hint == "org_metadata"
    cols = await runtime.read_model.active()
    find = {"find": cols.payments.name, "filter": flt, "sort": dict(sort_spec(q)), "limit": 21}
    plan = await runtime.mongo[runtime.settings.mongo_db].command(
        "explain", find | ({"hint": hint} if hints else {}), verbosity="executionStats")
    text = repr(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in text and "org_metadata" in text and "COLLSCAN" not in text, text
    matched = sum(1 for p in seeded if p.metadata.get("order") == "x-1")
    # Only the index's matches are read, not the organization's payments.
    assert 0 < plan["executionStats"]["totalDocsExamined"] <= matched < len(seeded)


async def test_a_query_with_consistent_with_finds_a_payment_right_after_its_creation(
        qsettings, runtime, api, auth, producer, projector):
    """Create (an event through Kafka and the projector process) then search by its
    metadata with the create's token: found every time, no sleep in between."""
    tokens, h = ConsistencyTokens(qsettings.consistency_token_secret), auth("org-a")
    for i in range(50):
        p = snapshot(f"rw-{i:02d}", "org-a").model_copy(update={"metadata": {"order": f"o-{i}"}})
        event = new_event(EventType.CREATED, p)
        await producer.send_and_wait(qsettings.events_topic, event.to_json_bytes(), key=event.subject.encode())
        found = await api.get("/v1/payments", params={"query": f"metadata['order']:'o-{i}'",
                                                      "consistent_with": tokens.issue([p])}, headers=h)
        assert found.status_code == 200, found.text
        assert [d["id"] for d in found.json()["data"]] == [p.id], i


async def test_the_query_workflow_and_facade_take_a_query(qsettings, seeded, runtime, api, auth):
    client = await connect(qsettings, with_metrics=False)
    async with build_worker(client, runtime.handlers, qsettings):
        facade = PaymentQueryClient(client, qsettings.query_task_queue)
        text = "metadata['order']:'x-1' OR status:failed"
        via_temporal = await facade.search_payments("org-a", SearchQuery(query=text, limit=100))
        via_http = (await api.get("/v1/payments", params={"query": text, "limit": 100}, headers=auth("org-a"))).json()
        assert via_temporal.model_dump(mode="json") == via_http
        assert {p.id for p in via_temporal.data} == {p.id for p in seeded if matches(parse(text), p)}
