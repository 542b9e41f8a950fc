"""A payment's history and the payment as at a version over the query API, written by the
projection's own write path into the real MongoDB (issue 23)."""

from __future__ import annotations

from datetime import timedelta

from services.query.adapters.batch_writes import apply_batch
from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from tests.support.builders import snapshot


def a_life(pid: str, org: str) -> list:
    """create, update, complete, refund: four versions by three actors; and another
    payment created then deleted."""
    v1 = snapshot(pid, org, amount=1000)
    v2 = v1.model_copy(update={"amount": 1500, "description": "two seats", "version": 2,
                               "updated_at": v1.created_at + timedelta(seconds=2)})
    v3 = v2.model_copy(update={"status": PaymentStatus.COMPLETED, "version": 3})
    v4 = v3.model_copy(update={"status": PaymentStatus.REFUNDED, "version": 4})
    gone1 = snapshot(f"{pid}-gone", org)
    gone2 = gone1.model_copy(update={"version": 2, "deleted_at": gone1.created_at + timedelta(seconds=9)})
    return [
        new_event(EventType.CREATED, v1, actor="alice", command_id="c1"),
        new_event(EventType.UPDATED, v2, {"amount": (1000, 1500)}, actor="alice", command_id="c2"),
        new_event(EventType.STATUS_CHANGED, v3, actor="/producers/psp", command_id="c3"),
        new_event(EventType.STATUS_CHANGED, v4, actor="system:refunds", command_id="c4"),
        new_event(EventType.CREATED, gone1, actor="bob", command_id="c5"),
        new_event(EventType.DELETED, gone2, actor="bob", command_id="c6"),
    ]


async def test_history_lists_every_version_with_actor_and_changes_in_pages(runtime, api, auth):
    cols = await runtime.read_model.active(fresh=True)
    events = a_life("hist-1", "org-h")
    await apply_batch(runtime.mongo, cols, events[3:])  # out of order, in two batches
    await apply_batch(runtime.mongo, cols, events[:3] + events[2:3])  # and a duplicate
    h = auth("org-h")
    body = (await api.get("/v1/payments/hist-1/history", headers=h)).json()
    assert [(e["version"], e["event_type"], e["actor"], e["command_id"]) for e in body["data"]] == [
        (1, "created", "alice", "c1"), (2, "updated", "alice", "c2"),
        (3, "status_changed", "/producers/psp", "c3"), (4, "status_changed", "system:refunds", "c4")]
    assert body["data"][1]["changes"] == {"amount": {"old": 1000, "new": 1500},
                                          "description": {"old": "", "new": "two seats"}}
    assert body["data"][3]["changes"] == {"status": {"old": "completed", "new": "refunded"}}
    assert body["data"][0]["changes"]["amount"] == {"old": None, "new": 1000}
    first = (await api.get("/v1/payments/hist-1/history", params={"limit": 3}, headers=h)).json()
    assert [e["version"] for e in first["data"]] == [1, 2, 3] and first["has_more"]
    rest = (await api.get("/v1/payments/hist-1/history", params={"limit": 3, "starting_after": first["next_cursor"]},
                          headers=h)).json()
    assert rest["data"] == body["data"][3:] and not rest["has_more"] and rest["next_cursor"] is None


async def test_deleted_payments_keep_their_history_and_other_organizations_see_nothing(runtime, api, auth):
    cols = await runtime.read_model.active(fresh=True)
    await apply_batch(runtime.mongo, cols, a_life("hist-2", "org-h"))
    mine = (await api.get("/v1/payments/hist-2-gone/history", headers=auth("org-h"))).json()
    assert [e["event_type"] for e in mine["data"]] == ["created", "deleted"]
    assert (await api.get("/v1/payments/hist-2-gone", headers=auth("org-h"))).status_code == 404
    assert (await api.get("/v1/payments/hist-2-gone", params={"as_of_version": 1},
                          headers=auth("org-h"))).json()["version"] == 1
    for path, params in (("/v1/payments/hist-2/history", {}), ("/v1/payments/hist-2", {"as_of_version": 1}),
                         ("/v1/payments/hist-2", {"as_of_version": 9})):
        theirs = await api.get(path, params=params, headers=auth("org-other"))
        assert theirs.status_code == 404 and theirs.json()["type"].endswith("payment-not-found")
        assert "version" not in theirs.json()["detail"]


async def test_as_of_version_is_the_payment_then_and_a_version_outside_says_which_exist(runtime, api, auth):
    cols = await runtime.read_model.active(fresh=True)
    await apply_batch(runtime.mongo, cols, a_life("hist-3", "org-h"))
    h = auth("org-h")
    then = (await api.get("/v1/payments/hist-3", params={"as_of_version": 2}, headers=h)).json()
    assert (then["version"], then["amount"], then["status"]) == (2, 1500, "processing")
    assert (await api.get("/v1/payments/hist-3", headers=h)).json()["status"] == "refunded"
    beyond = await api.get("/v1/payments/hist-3", params={"as_of_version": 5}, headers=h)
    assert beyond.status_code == 404 and beyond.headers["content-type"] == "application/problem+json"
    assert beyond.json()["versions"] == {"first": 1, "last": 4} and "versions 1 to 4" in beyond.json()["detail"]
    below = await api.get("/v1/payments/hist-3", params={"as_of_version": 0}, headers=h)
    assert below.status_code == 422 and "as_of_version" in below.text
    bad = await api.get("/v1/payments/hist-3/history", params={"starting_after": "x"}, headers=h)
    assert bad.status_code == 422 and "starting_after" in bad.text
