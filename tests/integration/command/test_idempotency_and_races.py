"""Idempotency-Key replays, deterministic workflow ids and racing commands."""

from __future__ import annotations

import asyncio
import json
import uuid

from services.command.commands import CreatePayment, ModifyPayment
from services.command.temporal.client import workflow_id
from shared.payment import PaymentAction


async def _payments_with(db, description: str) -> int:
    async with db.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM payments WHERE description = $1", description)


async def test_same_key_same_body_replays_the_first_response(api, db):
    key = f"key-{uuid.uuid4()}"
    marker = f"idem-{key}"
    first = await api.create(headers={"Idempotency-Key": key}, description=marker)
    second = await api.create(headers={"Idempotency-Key": key}, description=marker)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"] and second.headers["idempotent-replayed"] == "true"
    assert await _payments_with(db, marker) == 1
    assert len(await db.outbox(first.json()["id"])) == 1


async def test_same_key_different_body_is_409(api, db):
    key = f"key-{uuid.uuid4()}"
    first = await api.create(headers={"Idempotency-Key": key}, amount=100)
    before = await db.counts()
    other = await api.create(headers={"Idempotency-Key": key}, amount=101)
    assert other.status_code == 409 and other.headers["content-type"].startswith("application/problem+json")
    assert "different request" in other.json()["detail"]
    assert await db.counts() == before
    assert first.status_code == 201


async def test_keys_are_per_organization(api):
    key = f"key-{uuid.uuid4()}"
    a = await api.create(org="org-a", headers={"Idempotency-Key": key})
    b = await api.create(org="org-b", headers={"Idempotency-Key": key})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


async def test_concurrent_requests_with_one_key_create_one_payment(api, db):
    key = f"key-{uuid.uuid4()}"
    marker = f"idem-{key}"
    responses = await asyncio.gather(*[api.create(headers={"Idempotency-Key": key}, description=marker)
                                       for _ in range(5)])
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _payments_with(db, marker) == 1


async def test_rejections_are_replayed_too(api):
    payment = await api.created()
    await api.request("POST", f"/v1/payments/{payment['id']}/cancel")
    key = f"key-{uuid.uuid4()}"
    first = await api.request("POST", f"/v1/payments/{payment['id']}/complete", headers={"Idempotency-Key": key})
    second = await api.request("POST", f"/v1/payments/{payment['id']}/complete", headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 409 and first.content == second.content


async def test_async_create_with_key_replays_the_202(api):
    key = f"key-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key, "Prefer": "respond-async"}
    first = await api.create(headers=headers)
    second = await api.create(headers=headers)
    assert first.status_code == second.status_code == 202 and first.content == second.content


async def test_a_retry_after_a_202_gets_the_final_answer(api):
    """A 202 is not the key's final answer: retrying with the same key (without asking for
    async) waits for the same command and answers its result, once."""
    key = f"key-{uuid.uuid4()}"
    accepted = await api.create(headers={"Idempotency-Key": key, "Prefer": "respond-async"})
    assert accepted.status_code == 202
    final = await api.create(headers={"Idempotency-Key": key})
    assert final.status_code == 201, final.text
    again = await api.create(headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == final.json()


async def test_two_concurrent_updates_with_the_same_if_match(api, db):
    payment = await api.created(amount=100)
    path = f"/v1/payments/{payment['id']}"
    responses = await asyncio.gather(
        api.request("PATCH", path, headers={"If-Match": '"1"'}, json={"amount": 200}),
        api.request("PATCH", path, headers={"If-Match": '"1"'}, json={"amount": 300}),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses in ([200, 409], [200, 412]), [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200).json()
    loser = next(r for r in responses if r.status_code != 200)
    assert loser.headers["content-type"].startswith("application/problem+json")
    assert winner["version"] == 2
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT amount, version FROM payments WHERE id = $1", payment["id"])
    assert (row["amount"], row["version"]) == (winner["amount"], 2)
    events = [json.loads(r["payload"]) for r in await db.outbox(payment["id"])]
    assert [e["paymentversion"] for e in events] == [1, 2]
    assert events[1]["data"]["changes"] == {"amount": {"old": 100, "new": winner["amount"]}}


async def test_racing_transitions_never_both_win(api, db):
    payment = await api.created()
    path = f"/v1/payments/{payment['id']}"
    responses = await asyncio.gather(*[api.request("POST", f"{path}/{action}")
                                       for action in ("complete", "cancel", "fail")])
    assert sorted(r.status_code for r in responses) == [200, 409, 409], [r.text for r in responses]
    assert [r["payment_version"] for r in await db.outbox(payment["id"])] == [1, 2]


async def test_concurrent_blind_updates_lose_nothing(api, db):
    """Without If-Match every update applies, each on the version before it."""
    payment = await api.created(metadata={})
    path = f"/v1/payments/{payment['id']}"
    responses = await asyncio.gather(*[api.request("PATCH", path, json={"description": f"d{i}"}) for i in range(6)])
    assert {r.status_code for r in responses} == {200}
    assert sorted(r.json()["version"] for r in responses) == [2, 3, 4, 5, 6, 7]
    assert [r["payment_version"] for r in await db.outbox(payment["id"])] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_retried_command_never_executes_twice(runtime, db):
    """The facade, started twice with one command id: one workflow, one write."""
    service = runtime.commands
    payment_id = f"retry-{uuid.uuid4().hex[:8]}"
    create = CreatePayment(command_id=f"create-{payment_id}", organization_id="org-r", payment_id=payment_id,
                           amount=10, currency="EUR")
    first, second = await asyncio.gather(service.process(create), service.process(create))
    assert first == second
    update = ModifyPayment(command_id=f"update-{payment_id}", organization_id="org-r", payment_id=payment_id,
                           action=PaymentAction.UPDATE, amount=20)
    results = [await service.process(update) for _ in range(3)]
    assert {r.payment.version for r in results} == {2}
    assert [r["payment_version"] for r in await db.outbox(payment_id)] == [1, 2]
    handle = runtime.temporal.get_workflow_handle(workflow_id("org-r", update.command_id))
    assert (await handle.describe()).status.name == "COMPLETED"


async def test_an_activity_retry_returns_the_stored_result(runtime, db):
    """Execute the same command twice at the service layer (as a retried activity would)."""
    from services.command import handlers

    payment_id = f"act-{uuid.uuid4().hex[:8]}"
    cmd = CreatePayment(command_id=f"create-{payment_id}", organization_id="org-r", payment_id=payment_id,
                        amount=10, currency="EUR")
    first = await handlers.create(runtime.store, cmd, source="/test")
    again = await handlers.create(runtime.store, cmd, source="/test")
    assert again == first
    assert len(await db.outbox(payment_id)) == 1
