"""A payment's history on the read side (issue 23): changes computed from consecutive
snapshots, pages in version order, the payment as at a version; handlers over the fake
read model."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.query.handlers import PaymentNotFound, QueryHandlers, VersionNotFound
from services.query.history import BOOKKEEPING, changes, history_document
from services.query.queries import HistoryQuery
from shared.events import UNKNOWN_ACTOR, EventType, new_event
from tests.support.builders import history, snapshot
from tests.support.query_fakes import FakeReadModel

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
json_values = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
snapshots = st.dictionaries(st.sampled_from(["amount", "status", "metadata", "version", "updated_at", "x"]),
                            json_values)


def handlers(read_model: FakeReadModel) -> QueryHandlers:
    return QueryHandlers(read_model, None, max_wait=0.1)


def life(pid: str = "pay-1", org: str = "org-a", steps: int = 6):
    events = history(pid, org, T0, "EUR", [("create", 100)] + [("update", 100 + i) for i in range(1, steps)],
                     delete=False)
    return [e.model_copy(update={"actor": f"user-{e.paymentversion}", "commandid": f"cmd-{e.paymentversion}"})
            for e in events]


@given(snapshots, snapshots)
def test_changes_are_exactly_the_differing_fields_but_bookkeeping(before, after) -> None:
    found = changes(before, after)
    for field in (set(before) | set(after)) - BOOKKEEPING:
        if before.get(field) != after.get(field):
            assert found[field] == {"old": before.get(field), "new": after.get(field)}
        else:
            assert field not in found
    assert not set(found) & BOOKKEEPING
    assert changes(after, after) == {}


def test_a_new_snapshot_field_shows_up_as_a_change_with_nothing_else_to_do() -> None:
    assert changes({"amount": 1}, {"amount": 1, "amount_refunded": 40}) == {
        "amount_refunded": {"old": None, "new": 40}}


async def test_the_history_lists_every_version_with_who_did_it_and_what_changed() -> None:
    rm = FakeReadModel()
    events = life()
    for e in reversed(events):  # out of order: the history does not care
        rm.record(e)
    page = await handlers(rm).history("org-a", HistoryQuery(payment_id="pay-1"))
    assert [e.version for e in page.data] == [1, 2, 3, 4, 5, 6]
    assert [e.actor for e in page.data] == [f"user-{v}" for v in range(1, 7)]
    assert [e.command_id for e in page.data] == [f"cmd-{v}" for v in range(1, 7)]
    assert page.data[0].event_type == "created" and page.data[0].changes["amount"] == {"old": None, "new": 100}
    assert page.data[3].changes == {"amount": {"old": 102, "new": 103}}
    assert not page.has_more and page.next_cursor is None


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12))
async def test_pages_of_any_size_cover_the_history_once_in_order(limit, versions) -> None:
    rm = FakeReadModel()
    for e in life(steps=versions):
        rm.record(e)
    h, seen, cursor = handlers(rm), [], None
    while True:
        page = await h.history("org-a", HistoryQuery(payment_id="pay-1", limit=limit,
                                                     starting_after=int(cursor) if cursor else None))
        seen += page.data
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert [e.version for e in seen] == list(range(1, versions + 1))
    assert all(e.changes is not None for e in seen), "every page's first entry has its changes"


async def test_a_deleted_payment_keeps_its_history_and_another_organization_sees_nothing() -> None:
    rm = FakeReadModel()
    created = snapshot("pay-d", "org-a")
    gone = created.model_copy(update={"version": 2, "deleted_at": T0})
    for e in (new_event(EventType.CREATED, created), new_event(EventType.DELETED, gone)):
        rm.record(e)
    h = handlers(rm)
    page = await h.history("org-a", HistoryQuery(payment_id="pay-d"))
    assert [e.event_type for e in page.data] == ["created", "deleted"]
    assert page.data[0].actor == UNKNOWN_ACTOR  # events from before actors were recorded
    assert page.data[1].changes["deleted_at"]["old"] is None
    with pytest.raises(PaymentNotFound):
        await h.history("org-b", HistoryQuery(payment_id="pay-d"))
    with pytest.raises(PaymentNotFound):
        await h.get_as_of("org-b", "pay-d", 1)
    assert (await h.get_as_of("org-a", "pay-d", 1)).deleted_at is None


async def test_as_of_a_version_is_the_payment_then_and_beyond_the_newest_says_which_exist() -> None:
    rm = FakeReadModel()
    events = life(steps=4)
    random.shuffle(events)
    for e in events:
        rm.record(e)
    h = handlers(rm)
    assert (await h.get_as_of("org-a", "pay-1", 2)).amount == 101
    assert (await h.get_as_of("org-a", "pay-1", 4)).version == 4
    with pytest.raises(VersionNotFound) as err:
        await h.get_as_of("org-a", "pay-1", 5)
    assert err.value.newest == 4 and "versions 1 to 4" in str(err.value)


def test_a_history_document_is_the_same_whoever_writes_it() -> None:
    event = life()[2]
    assert history_document(event) == history_document(event.model_copy(deep=True))


def test_the_documented_example_is_what_the_history_computes() -> None:
    from services.query.queries import PaymentHistory
    from shared.payment import PaymentSnapshot

    example = PaymentHistory.model_json_schema()["examples"][0]["data"]
    v1 = PaymentSnapshot(id="pay_01J9Z3", organization_id="org_acme", user_id="user_42", amount=1250, currency="EUR",
                         status="processing", description="Cloud resources, March", version=1, created_at=T0,
                         updated_at=T0)
    v2 = v1.model_copy(update={"status": "completed", "version": 2})
    assert changes(None, v1.model_dump(mode="json")) == example[0]["changes"]
    assert changes(v1.model_dump(mode="json"), v2.model_dump(mode="json")) == example[1]["changes"]
