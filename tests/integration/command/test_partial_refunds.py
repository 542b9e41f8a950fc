"""Partial refunds through HTTP, with a real Temporal worker and PostgreSQL: the refunds
add up, a refund beyond what is left is a 409 naming it, bad amounts are 422 naming the
field, an Idempotency-Key makes a retry the same refund, another organization sees a 404,
and concurrent refunds never refund more than the amount."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from services.command import handlers
from services.command.commands import ModifyPayment, Rejected, RejectionKind
from shared.events import EventType
from shared.payment import PaymentAction
from tests.support.problems import assert_problem


async def completed(api, amount: int = 1000, org: str = "org-a") -> dict:
    payment = await api.created(org=org, amount=amount)
    response = await api.request("POST", f"/v1/payments/{payment['id']}/complete", org=org)
    assert response.status_code == 200, response.text
    return response.json()


async def refund(api, payment_id: str, amount, reason: str = "", **kwargs):
    return await api.request("POST", f"/v1/payments/{payment_id}/refunds", json={"amount": amount, "reason": reason},
                             **kwargs)


async def test_refunds_add_up_to_refunded(api, db):
    payment = await completed(api, 1000)
    first = await refund(api, payment["id"], 300, "one item returned")
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["status"], body["amount_refunded"], body["version"]) == ("partially_refunded", 300, 3)
    assert [(r["amount"], r["reason"]) for r in body["refunds"]] == [(300, "one item returned")]
    assert body["refunds"][0]["id"].startswith("rf_") and body["refunds"][0]["actor"]
    second = (await refund(api, payment["id"], 200)).json()
    assert (second["status"], second["amount_refunded"], len(second["refunds"])) == ("partially_refunded", 500, 2)
    # The old endpoint refunds what is left.
    rest = await api.request("POST", f"/v1/payments/{payment['id']}/refund")
    assert rest.status_code == 200, rest.text
    last = rest.json()
    assert (last["status"], last["amount_refunded"], last["refunds"][-1]["amount"]) == ("refunded", 1000, 500)
    rows = await db.outbox(payment["id"])
    assert [r["event_type"] for r in rows] == ["created", "status_changed", "refunded", "refunded", "refunded"]
    events = [json.loads(r["payload"]) for r in rows[2:]]
    assert all(e["type"] == EventType.REFUNDED for e in events)
    assert [e["data"]["refund"]["amount"] for e in events] == [300, 200, 500]
    assert events[0]["data"]["changes"] == {"status": {"old": "completed", "new": "partially_refunded"},
                                            "amount_refunded": {"old": 0, "new": 300}}
    assert events[-1]["data"]["payment"]["status"] == "refunded"
    again = await refund(api, payment["id"], 1)
    assert_problem(again, 409, type_suffix="illegal-transition")


async def test_a_refund_beyond_what_is_left_is_409_naming_it(api, db):
    payment = await completed(api, 1000)
    assert (await refund(api, payment["id"], 700)).status_code == 200
    before = len(await db.outbox(payment["id"]))
    response = await refund(api, payment["id"], 301)
    body = assert_problem(response, 409, type_suffix="refund-exceeds-remaining", detail_has="remaining: 300")
    assert body["remaining"] == 300 and body["current_version"] == 3
    assert len(await db.outbox(payment["id"])) == before


@pytest.mark.parametrize("amount", [0, -5, 1.5, "100", None, True, 2**63])
async def test_a_refund_amount_that_is_not_a_positive_integer_is_422_naming_it(api, db, amount):
    payment = await completed(api, 1000)
    before = len(await db.outbox(payment["id"]))
    response = await refund(api, payment["id"], amount)
    assert_problem(response, 422, detail_has="amount")
    assert len(await db.outbox(payment["id"])) == before


async def test_refunds_of_what_has_not_been_paid_are_409(api):
    payment = await api.created(amount=1000)  # processing
    assert_problem(await refund(api, payment["id"], 10), 409, type_suffix="illegal-transition")


async def test_delete_is_refused_once_partially_refunded(api):
    payment = await completed(api, 1000)
    await refund(api, payment["id"], 10)
    assert_problem(await api.request("DELETE", f"/v1/payments/{payment['id']}"), 409, detail_has="cannot be deleted")


async def test_an_idempotency_key_makes_a_retry_the_same_refund(api, db):
    payment = await completed(api, 1000)
    key = {"Idempotency-Key": f"refund-{uuid.uuid4()}"}
    first = await refund(api, payment["id"], 100, headers=key)
    again = await refund(api, payment["id"], 100, headers=key)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert first.json()["amount_refunded"] == 100
    other = await refund(api, payment["id"], 100)  # no key: another refund
    assert other.json()["amount_refunded"] == 200
    reused = await refund(api, payment["id"], 150, headers=key)  # the key with another body
    assert reused.status_code == 422 or reused.status_code == 409, reused.text
    assert (await api.request("GET", f"/v1/commands/{first.headers['command-id']}")).status_code == 200


async def test_another_organizations_payment_is_404(api):
    payment = await completed(api, 1000)
    assert_problem(await refund(api, payment["id"], 10, org="org-b"), 404)


async def test_ten_concurrent_refunds_of_a_fifth_exactly_five_succeed(api, db):
    payment = await completed(api, 1000)
    responses = await asyncio.gather(*(refund(api, payment["id"], 200, f"r{i}") for i in range(10)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 5 + [409] * 5, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert r.json()["type"].endswith(("refund-exceeds-remaining", "illegal-transition")), r.text
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, amount_refunded, jsonb_array_length(refunds) AS n FROM payments"
                                  " WHERE organization_id = 'org-a' AND id = $1", payment["id"])
    assert (row["status"], row["amount_refunded"], row["n"]) == ("refunded", 1000, 5)
    assert [r["event_type"] for r in await db.outbox(payment["id"])].count("refunded") == 5


async def test_the_database_refuses_refunds_beyond_the_amount(db, api):
    payment = await completed(api, 1000)
    async with db.pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE payments SET amount_refunded = 1001 WHERE organization_id = 'org-a'"
                               " AND id = $1", payment["id"])


async def test_ten_concurrent_refund_transactions_exactly_five_succeed(api, runtime):
    """The same below group commit: ten transactions of their own, each locking the row."""
    payment = await completed(api, 1000)

    async def one(i: int):
        cmd = ModifyPayment(command_id=f"tx-refund-{uuid.uuid4()}", organization_id="org-a", actor="tests",
                            payment_id=payment["id"], action=PaymentAction.REFUND, amount=200, reason=f"r{i}")
        try:
            return await handlers.modify(runtime.store, cmd, source="/tests")
        except Rejected as rejected:
            return rejected

    outcomes = await asyncio.gather(*(one(i) for i in range(10)))
    refused = [o for o in outcomes if isinstance(o, Rejected)]
    assert len(refused) == 5, outcomes
    assert all(r.kind in (RejectionKind.REFUND_EXCEEDS_REMAINING, RejectionKind.ILLEGAL_TRANSITION) for r in refused)
    stored = await runtime.store.get_payment("org-a", payment["id"])
    assert stored is not None and (stored.status, stored.amount_refunded, len(stored.refunds)) == ("refunded", 1000, 5)
