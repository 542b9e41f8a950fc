"""The projection (services/query/projection.py) on in-memory ports: what it applies,
dead-letters, announces and bumps. On MongoDB, Redis and Kafka:
tests/integration/query/test_poison_events.py and test_projector.py."""

from __future__ import annotations

import json

from services.query.projection import UNTRUSTED_SOURCE, Projection
from shared.events import EventType, PaymentEvent, new_event
from tests.support.builders import snapshot
from tests.support.query_fakes import FakeDeadLetters, FakeProjectionStore, FakeReaders, messages

SOURCE = "/payments/command"


def created(pid: str, org: str = "org-a", source: str = SOURCE) -> bytes:
    return new_event(EventType.CREATED, snapshot(pid, org), source=source).to_json_bytes()


def projection(store: FakeProjectionStore, readers: FakeReaders, dead: FakeDeadLetters) -> Projection:
    return Projection(store, readers, dead, group="g-test", trusted_sources={SOURCE})


async def test_valid_events_are_applied_announced_and_their_organizations_bumped() -> None:
    store, readers, dead = FakeProjectionStore(), FakeReaders(), FakeDeadLetters()
    await projection(store, readers, dead).handle(messages([created("p1"), created("p2", "org-b"), created("p1")]))
    assert [e.subject for e in store.applied] == ["p1", "p2"]  # the second p1 is a duplicate
    assert sorted(readers.announced) == [("org-a", "p1"), ("org-b", "p2")]
    assert readers.bumped == [{"org-a", "org-b"}] and store.owed == set()
    assert dead.records == []


async def test_invalid_and_untrusted_messages_are_dead_lettered_and_the_rest_applied() -> None:
    store, readers, dead = FakeProjectionStore(), FakeReaders(), FakeDeadLetters()
    await projection(store, readers, dead).handle(
        messages([b"{not json", created("p1"), created("p2", source="/somebody/else")]))
    assert [e.subject for e in store.applied] == ["p1"]
    assert [(h["dlq-kind"], h["dlq-source-offset"]) for _, _, h in dead.records] == [(b"invalid", b"0"),
                                                                                      (b"invalid", b"2")]
    assert dead.records[1][2]["dlq-reason"] == UNTRUSTED_SOURCE.encode()


async def test_an_event_the_store_refuses_is_found_dead_lettered_and_the_batch_applied_without_it() -> None:
    def refuse(event: PaymentEvent) -> BaseException | None:
        return KeyError("a bug that one input triggers") if event.subject == "bad" else None

    store, readers, dead = FakeProjectionStore(refuse=refuse), FakeReaders(), FakeDeadLetters()
    batch = [created(f"p{i}") for i in range(9)]
    batch.insert(5, created("bad"))
    await projection(store, readers, dead).handle(messages(batch))
    assert sorted(e.subject for e in store.applied) == sorted(f"p{i}" for i in range(9))
    [(key, value, headers)] = dead.records
    assert json.loads(value)["subject"] == "bad" and headers["dlq-source-offset"] == b"5"
    assert headers["dlq-kind"] == b"error" and b"KeyError" in headers["dlq-reason"]


async def test_a_transient_failure_is_retried_never_dead_lettered() -> None:
    store = FakeProjectionStore(transient_failures=[ConnectionError("the store is away")])
    readers, dead = FakeReaders(), FakeDeadLetters()
    handler = projection(store, readers, dead)
    await handler.handle(messages([created("p1")]))
    assert [e.subject for e in store.applied] == ["p1"] and dead.records == []
    assert handler.health.failures == 0, "it progressed again"


async def test_a_bump_that_failed_stays_owed_and_is_flushed_later() -> None:
    store, readers, dead = FakeProjectionStore(), FakeReaders(failing=True), FakeDeadLetters()
    handler = projection(store, readers, dead)
    await handler.handle(messages([created("p1")]))
    assert handler.pending_bumps == {"org-a"} and store.owed == {"org-a"}
    readers.failing = False
    await handler.flush_bumps()
    assert readers.bumped == [{"org-a"}] and store.owed == set() and handler.pending_bumps == set()


async def test_a_restarted_projection_bumps_what_its_predecessor_owed() -> None:
    store, readers = FakeProjectionStore(owed={"org-z"}), FakeReaders()
    await projection(store, readers, FakeDeadLetters()).flush_bumps()  # its timer, before any event
    assert readers.bumped == [{"org-z"}] and store.owed == set()
