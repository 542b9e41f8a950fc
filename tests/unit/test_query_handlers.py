"""The query handlers (services/query/handlers.py) on in-memory ports: read-your-writes
waits, NotCaughtUp, and what the cache answers (hit, miss, bypass). The same paths on
MongoDB and Redis: tests/integration/query/test_query_api.py and test_consistency.py."""

from __future__ import annotations

import asyncio

import pytest

from services.query.handlers import NotCaughtUp, PaymentNotFound, QueryHandlers
from services.query.queries import SearchQuery
from shared.consistency import ConsistencyTokens, ForeignConsistencyToken
from shared.telemetry import QUERIES
from tests.support.builders import snapshot
from tests.support.query_fakes import FakeCache, FakeReadModel, FakeSignal
from tests.support.traces import in_memory_tracing, of_sdk

TOKENS = ConsistencyTokens("a-test-secret-of-enough-length")


def handlers(read_model: FakeReadModel, cache: FakeCache | None = None, signal: FakeSignal | None = None,
             max_wait: float = 1.0) -> QueryHandlers:
    return QueryHandlers(read_model, cache, TOKENS, max_wait=max_wait, signal=signal)


def queries(kind: str, cache: str) -> float:
    return QUERIES.labels(kind, cache)._value.get()


async def project_later(read_model: FakeReadModel, signal: FakeSignal | None, *snapshots, after: float = 0.05) -> None:
    await asyncio.sleep(after)
    for s in snapshots:
        read_model.project(s)
        if signal is not None:
            signal.committed(s.organization_id, [s.id])


async def test_min_version_waits_until_the_read_model_holds_it_woken_by_the_signal() -> None:
    read_model, signal = FakeReadModel(), FakeSignal()
    read_model.project(snapshot("p1", amount=100))
    h = handlers(read_model, signal=signal)
    later = asyncio.create_task(project_later(read_model, signal, snapshot("p1", amount=250, version=2)))
    view = await h.get("org-a", "p1", min_version=2)
    await later
    assert (view.version, view.amount) == (2, 250)
    # Woken by the commit, not by polling: the signal is live, so it looks again only then.
    assert read_model.looks <= 3


async def test_without_the_signal_the_wait_polls_until_the_version_is_there() -> None:
    read_model = FakeReadModel()
    h = handlers(read_model)
    later = asyncio.create_task(project_later(read_model, None, snapshot("p1")))
    assert (await h.get("org-a", "p1", min_version=1)).version == 1
    await later
    assert read_model.looks > 1


async def test_a_version_not_reached_within_the_bound_is_not_caught_up() -> None:
    read_model = FakeReadModel()
    read_model.project(snapshot("p1", version=1))
    h = handlers(read_model, signal=FakeSignal(), max_wait=0.05)
    with pytest.raises(NotCaughtUp) as caught:
        await h.get("org-a", "p1", min_version=3)
    assert caught.value.behind == [("p1", 3, 1)]
    assert (caught.value.payment_id, caught.value.wanted, caught.value.seen) == ("p1", 3, 1)
    assert caught.value.waited >= 0.05


async def test_consistent_with_names_every_payment_still_behind() -> None:
    read_model = FakeReadModel()
    read_model.project(snapshot("p1", version=2))
    token = TOKENS.issue([snapshot("p1", version=2), snapshot("p2", version=1), snapshot("p3", version=4)])
    h = handlers(read_model, FakeCache(), max_wait=0.05)
    with pytest.raises(NotCaughtUp) as caught:
        await h.search("org-a", SearchQuery(), [token])
    assert caught.value.behind == [("p2", 1, None), ("p3", 4, None)]


async def test_a_deleted_payment_ends_the_wait_and_is_not_found() -> None:
    read_model = FakeReadModel()
    read_model.project(snapshot("p1", version=1))
    h = handlers(read_model, signal=FakeSignal())
    later = asyncio.create_task(project_later(read_model, None, snapshot("p1", version=2, deleted=True)))
    with pytest.raises(PaymentNotFound):
        await h.get("org-a", "p1", min_version=2)
    await later


async def test_a_second_read_is_a_hit_and_a_bump_makes_it_a_miss_again() -> None:
    read_model, cache = FakeReadModel(), FakeCache()
    read_model.project(snapshot("p1"))
    h = handlers(read_model, cache)
    misses, hits = queries("get", "miss"), queries("get", "hit")
    assert (await h.get("org-a", "p1")).version == 1
    assert (await h.get("org-a", "p1")).version == 1
    assert (queries("get", "miss") - misses, queries("get", "hit") - hits) == (1, 1)
    assert read_model.computed == 1, "a hit does not read the read model"
    read_model.project(snapshot("p1", version=2))
    assert (await h.get("org-a", "p1")).version == 1, "cached: the epoch has not moved"
    await cache.bump({"org-a"})
    assert (await h.get("org-a", "p1")).version == 2
    assert queries("get", "miss") - misses == 2


async def test_a_cache_that_is_down_or_absent_is_bypassed() -> None:
    read_model, cache = FakeReadModel(), FakeCache()
    read_model.project(snapshot("p1"))
    cache.down = True
    bypassed = queries("search", "bypass")
    for h in (handlers(read_model, cache), handlers(read_model, None)):
        assert [p.id for p in (await h.search("org-a", SearchQuery())).data] == ["p1"]
        assert [p.id for p in (await h.search("org-a", SearchQuery())).data] == ["p1"]
    assert queries("search", "bypass") - bypassed == 4
    assert read_model.computed == 4


async def test_a_token_read_never_gets_an_answer_cached_before_its_write() -> None:
    read_model, cache = FakeReadModel(), FakeCache()
    read_model.project(snapshot("p1"))
    h = handlers(read_model, cache)
    assert (await h.search("org-a", SearchQuery())).total == 1  # cached, without p2
    written = snapshot("p2")
    read_model.project(written)  # projected, but the epoch has not moved yet
    token = TOKENS.issue([written])
    assert (await h.search("org-a", SearchQuery())).total == 1, "without the token: the cached answer"
    assert (await h.search("org-a", SearchQuery(), [token])).total == 2
    hits = queries("search", "hit")
    assert (await h.search("org-a", SearchQuery(), [token])).total == 2
    assert queries("search", "hit") - hits == 1, "once reflected, the token's reads use the cache"


async def test_another_organizations_payment_is_not_found_and_its_token_is_refused() -> None:
    read_model = FakeReadModel()
    read_model.project(snapshot("p1", "org-b"))
    h = handlers(read_model, FakeCache())
    assert await h.get_or_none("org-a", "p1") is None
    with pytest.raises(ForeignConsistencyToken):
        await h.get("org-a", "p1", consistent_with=[TOKENS.issue([snapshot("p1", "org-b")])])


async def test_a_read_that_waits_for_the_projector_shows_it_in_its_trace() -> None:
    read_model, signal = FakeReadModel(), FakeSignal()
    read_model.project(snapshot("p1", amount=100))
    with in_memory_tracing() as exporter:
        later = asyncio.create_task(project_later(read_model, signal, snapshot("p1", amount=250, version=2)))
        await handlers(read_model, signal=signal).get("org-a", "p1", min_version=2)
        await later
        waits = [of_sdk(s) for s in exporter.get_finished_spans() if s.name == "read-your-writes wait"]
    assert [(w.attributes["payments.payments"], w.end - w.start >= 40_000_000) for w in waits] == [(1, True)]
