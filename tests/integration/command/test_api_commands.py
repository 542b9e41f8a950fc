"""Every command's happy path and every business rejection, through HTTP, with the
workflow executed by a real Temporal worker and written to a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from services.command.entrypoints.http.idempotency import ID_NAMESPACE
from shared.auth import SCOPE_READ
from shared.consistency import ConsistencyTokens, Writes
from shared.events import EventType
from tests.support.problems import assert_problem


async def test_create_returns_the_payment_with_version_etag_and_location(api, db):
    response = await api.create(amount=1999, currency="JPY", description="cloud", metadata={"k": "v"},
                                user_id="u-1")
    assert response.status_code == 201
    payment = response.json()
    assert payment["amount"] == 1999 and payment["currency"] == "JPY" and payment["status"] == "processing"
    assert payment["version"] == 1 and payment["organization_id"] == "org-a" and payment["user_id"] == "u-1"
    assert payment["metadata"] == {"k": "v"} and payment["deleted_at"] is None
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/v1/payments/{payment['id']}"
    rows = await db.outbox(payment["id"])
    assert [(r["payment_version"], r["event_type"]) for r in rows] == [(1, "created")]
    event = json.loads(rows[0]["payload"])
    assert event["type"] == EventType.CREATED
    assert payment["formatted_amount"] == "1999 JPY"  # the one payment representation (shared/payment_view.py)
    assert event["data"]["payment"] == {k: v for k, v in payment.items() if v is not None and k != "formatted_amount"}
    assert event["source"] == api.settings.event_source and event["paymentversion"] == 1


async def test_user_id_defaults_to_the_token_subject(api):
    headers = api.auth("org-a", subject="user-77")
    response = await api.http.post("/v1/payments", json={"amount": 5, "currency": "EUR"}, headers=headers)
    assert response.status_code == 201 and response.json()["user_id"] == "user-77"


async def test_client_chosen_id_and_duplicate_id_conflict(api, db):
    first = await api.create(id="inv-2024-117-a", amount=10)
    assert first.status_code == 201 and first.json()["id"] == "inv-2024-117-a"
    again = await api.create(id="inv-2024-117-a", amount=10)  # same command: same result
    assert again.status_code == 201 and again.json() == first.json()
    before = await db.counts()
    other = await api.create(id="inv-2024-117-a", amount=11)  # another command on a taken id
    assert_problem(other, 409, type_suffix="conflict", detail_has="already exists")
    assert (await db.counts())[:2] == before[:2]


async def test_payment_ids_belong_to_their_organization(api, db):
    """Issue 11.1: an id taken in org-a is free in org-b (nothing to observe), and org-b
    cannot squat the id org-a's next idempotent create derives."""
    mine = await api.created(id="inv-shared-1", amount=10)
    theirs = await api.create(org="org-b", id="inv-shared-1", amount=99)
    assert theirs.status_code == 201, theirs.text
    assert (theirs.json()["organization_id"], theirs.json()["amount"]) == ("org-b", 99)
    key = f"key-{uuid.uuid4()}"
    derived = str(uuid.uuid5(ID_NAMESPACE, f"org-a\n{key}"))
    assert (await api.create(org="org-b", id=derived)).status_code == 201
    created = await api.create(org="org-a", headers={"Idempotency-Key": key})
    assert created.status_code == 201 and created.json()["id"] == derived, created.text
    # Each organization changes only its own payment of that id.
    deleted = await api.request("DELETE", "/v1/payments/inv-shared-1", org="org-b")
    assert deleted.status_code == 200 and deleted.json()["amount"] == 99
    completed = await api.request("POST", "/v1/payments/inv-shared-1/complete")
    assert completed.status_code == 200 and completed.json()["version"] == mine["version"] + 1


async def test_update_with_if_match(api, db):
    payment = await api.created(amount=100, description="before")
    response = await api.request("PATCH", f"/v1/payments/{payment['id']}", headers={"If-Match": '"1"'},
                                 json={"amount": 150, "metadata": {"po": "42"}})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["amount"] == 150 and updated["metadata"] == {"po": "42"} and updated["version"] == 2
    assert updated["description"] == "before" and response.headers["etag"] == '"2"'
    rows = await db.outbox(payment["id"])
    event = json.loads(rows[-1]["payload"])
    assert event["type"] == EventType.UPDATED and event["paymentversion"] == 2
    assert event["data"]["changes"] == {"amount": {"old": 100, "new": 150}, "metadata": {"old": {}, "new": {"po": "42"}}}


async def test_update_without_if_match_applies_to_the_current_version(api):
    payment = await api.created()
    response = await api.request("PATCH", f"/v1/payments/{payment['id']}", json={"description": "x"})
    assert response.status_code == 200 and response.json()["version"] == 2


async def test_update_with_stale_version_is_412_and_changes_nothing(api, db):
    payment = await api.created()
    await api.request("PATCH", f"/v1/payments/{payment['id']}", json={"description": "v2"})
    stale = await api.request("PATCH", f"/v1/payments/{payment['id']}", headers={"If-Match": "1"},
                              json={"description": "lost?"})
    body = assert_problem(stale, 412, type_suffix="version-mismatch", detail_has="version 2")
    assert body["current_version"] == 2
    assert [r["payment_version"] for r in await db.outbox(payment["id"])] == [1, 2]


async def test_bad_if_match_is_400(api):
    payment = await api.created()
    response = await api.request("PATCH", f"/v1/payments/{payment['id']}", headers={"If-Match": "abc"},
                                 json={"description": "x"})
    assert_problem(response, 400, detail_has="If-Match")


@pytest.mark.parametrize(
    ("path", "status"),
    [(["complete"], "completed"), (["fail"], "failed"), (["cancel"], "cancelled"),
     (["complete", "refund"], "refunded")],
)
async def test_status_transitions(api, db, path, status):
    payment = await api.created()
    for step, action in enumerate(path, start=2):
        response = await api.request("POST", f"/v1/payments/{payment['id']}/{action}")
        assert response.status_code == 200, response.text
        assert response.json()["version"] == step
    assert response.json()["status"] == status
    rows = await db.outbox(payment["id"])
    # A refund, of all that is left here, is a refunded event (it records the refund).
    assert [r["event_type"] for r in rows] == ["created"] + [
        "refunded" if action == "refund" else "status_changed" for action in path]
    last = json.loads(rows[-1]["payload"])
    assert last["data"]["payment"]["status"] == status and last["data"]["changes"]["status"]["new"] == status


@pytest.mark.parametrize(
    ("setup", "action"),
    [([], "refund"), (["complete"], "complete"), (["complete"], "cancel"), (["fail"], "complete"),
     (["cancel"], "fail"), (["complete", "refund"], "refund"), (["cancel"], "refund")],
)
async def test_illegal_transitions_are_409(api, db, setup, action):
    payment = await api.created()
    for step in setup:
        assert (await api.request("POST", f"/v1/payments/{payment['id']}/{step}")).status_code == 200
    before = len(await db.outbox(payment["id"]))
    response = await api.request("POST", f"/v1/payments/{payment['id']}/{action}")
    assert_problem(response, 409, type_suffix="illegal-transition", detail_has=f"cannot {action}")
    assert len(await db.outbox(payment["id"])) == before


@pytest.mark.parametrize("setup", [["complete"], ["fail"], ["cancel"], ["complete", "refund"]])
async def test_update_is_refused_unless_processing(api, setup):
    payment = await api.created()
    for step in setup:
        await api.request("POST", f"/v1/payments/{payment['id']}/{step}")
    response = await api.request("PATCH", f"/v1/payments/{payment['id']}", json={"amount": 1})
    assert_problem(response, 409, detail_has="only be updated while processing")


async def test_delete_is_soft_and_hides_the_payment(api, db):
    payment = await api.created()
    response = await api.request("DELETE", f"/v1/payments/{payment['id']}", headers={"If-Match": "1"})
    assert response.status_code == 200, response.text
    deleted = response.json()
    assert deleted["deleted_at"] is not None and deleted["version"] == 2 and deleted["status"] == "processing"
    rows = await db.outbox(payment["id"])
    assert json.loads(rows[-1]["payload"])["type"] == EventType.DELETED
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT deleted_at IS NOT NULL FROM payments WHERE id = $1", payment["id"])
    again = await api.request("POST", f"/v1/payments/{payment['id']}/complete")
    assert_problem(again, 404, type_suffix="not-found")


@pytest.mark.parametrize("setup", [["complete"], ["complete", "refund"]])
async def test_delete_is_refused_for_completed_and_refunded(api, db, setup):
    payment = await api.created()
    for step in setup:
        await api.request("POST", f"/v1/payments/{payment['id']}/{step}")
    response = await api.request("DELETE", f"/v1/payments/{payment['id']}")
    assert_problem(response, 409, detail_has="cannot be deleted")


@pytest.mark.parametrize(("step", "status"), [("fail", "failed"), ("cancel", "cancelled")])
async def test_delete_is_allowed_for_failed_and_cancelled(api, step, status):
    payment = await api.created()
    moved = await api.request("POST", f"/v1/payments/{payment['id']}/{step}")
    assert (moved.status_code, moved.json()["status"]) == (200, status)  # not a processing payment any more
    deleted = await api.request("DELETE", f"/v1/payments/{payment['id']}")
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert (body["status"], body["version"], body["deleted_at"] is not None) == (status, 3, True)


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("PATCH", "", {"amount": 5}), ("POST", "/complete", None), ("POST", "/refund", None), ("DELETE", "", None)],
)
async def test_unknown_and_foreign_payments_are_404(api, db, method, suffix, body):
    foreign = await api.created(org="org-b")
    before = await db.counts()
    for payment_id in ("does-not-exist", foreign["id"]):
        response = await api.request(method, f"/v1/payments/{payment_id}{suffix}", org="org-a", json=body)
        assert_problem(response, 404, type_suffix="not-found", detail_has="does not exist")
    assert (await db.counts())[:2] == before[:2]


async def test_batch_create_gives_one_result_per_item(api, db):
    taken = await api.created(id="batch-taken-1")
    items = [{"amount": 100, "currency": "EUR"}, {"id": taken["id"], "amount": 5, "currency": "EUR"},
             {"amount": 7, "currency": "BHD", "description": "third"}]
    response = await api.request("POST", "/v1/payments/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 201]
    assert results[1]["problem"]["detail"].endswith("already exists")
    assert results[2]["payment"]["currency"] == "BHD" and results[2]["payment"]["version"] == 1
    for item in (results[0], results[2]):
        assert [r["payment_version"] for r in await db.outbox(item["payment"]["id"])] == [1]


async def test_batch_limit(api, db):
    before = await db.counts()
    items = [{"amount": 1, "currency": "EUR"}] * (api.settings.command_max_batch_items + 1)
    response = await api.request("POST", "/v1/payments/batch", json={"items": items})
    assert_problem(response, 422, detail_has="at most")
    assert (await db.counts())[:2] == before[:2]


async def test_respond_async_returns_202_and_a_status_url(api):
    response = await api.create(headers={"Prefer": "respond-async"}, amount=321)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "running"
    assert response.headers["location"] == accepted["status_url"] == f"/v1/commands/{accepted['command_id']}"
    for _ in range(100):
        status = (await api.request("GET", accepted["status_url"])).json()
        if status["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "completed", status
    assert status["result"]["amount"] == 321 and status["result"]["version"] == 1


async def test_failed_async_command_reports_its_problem(api):
    payment = await api.created()
    await api.request("POST", f"/v1/payments/{payment['id']}/cancel")
    response = await api.request("POST", f"/v1/payments/{payment['id']}/complete", headers={"Prefer": "respond-async"})
    assert response.status_code == 202
    for _ in range(100):
        status = (await api.request("GET", response.headers["location"])).json()
        if status["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "failed" and status["problem"]["status"] == 409, status


async def test_command_status_is_scoped_to_the_organization(api):
    response = await api.create(headers={"Prefer": "respond-async"})
    url = response.headers["location"]
    assert_problem(await api.request("GET", url, org="org-b"), 404)
    assert_problem(await api.request("GET", "/v1/commands/nope"), 404)
    for _ in range(200):  # let the async command finish: later tests count rows
        if (await api.request("GET", url)).json()["status"] != "running":
            break
        await asyncio.sleep(0.05)


async def test_read_scope_cannot_write(api, db):
    before = await db.counts()
    response = await api.create(headers=api.auth("org-a", (SCOPE_READ,)))
    assert_problem(response, 403, detail_has="payments:write")
    assert await db.counts() == before


async def test_openapi_documents_every_route_with_examples(api):
    spec = (await api.http.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/v1/payments", "/v1/payments/batch", "/v1/payments/{payment_id}",
                 "/v1/payments/{payment_id}/complete", "/v1/payments/{payment_id}/fail",
                 "/v1/payments/{payment_id}/cancel", "/v1/payments/{payment_id}/refund",
                 "/v1/commands/{command_id}"):
        assert path in paths
    schemas = spec["components"]["schemas"]
    assert schemas["CreatePaymentRequest"]["examples"] and schemas["UpdatePaymentRequest"]["examples"]
    assert "412" in paths["/v1/payments/{payment_id}"]["patch"]["responses"]
    assert "Problem" in schemas


async def test_health_ready_and_metrics(api):
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "temporal": "ok"}
    await api.created()
    metrics = (await api.http.get("/metrics")).text
    assert 'payments_commands_total{outcome="success",type="create"}' in metrics
    assert 'payments_command_duration_seconds_count{type="create"}' in metrics


async def test_every_write_answers_a_consistency_token_naming_it(api):
    tokens = ConsistencyTokens(api.settings.consistency_token_secret)
    created = await api.create(headers={"Idempotency-Key": f"ct-{uuid.uuid4()}"}, amount=42)
    payment = created.json()
    assert tokens.required([created.headers["consistency-token"]], "org-a") == \
        Writes("org-a", ((payment["id"], 1),))
    replayed = await api.create(headers={"Idempotency-Key": created.request.headers["idempotency-key"]}, amount=42)
    assert replayed.headers["consistency-token"] == created.headers["consistency-token"]
    completed = await api.request("POST", f"/v1/payments/{payment['id']}/complete")
    assert tokens.decode(completed.headers["consistency-token"]).versions == ((payment["id"], 2),)

    rejected = await api.request("POST", f"/v1/payments/{payment['id']}/cancel")
    assert rejected.status_code == 409 and "consistency-token" not in rejected.headers

    taken = {"id": payment["id"], "amount": 5, "currency": "EUR"}
    batch = await api.request("POST", "/v1/payments/batch", json={"items": [{"amount": 1, "currency": "EUR"}, taken]})
    body = batch.json()
    assert [r["status"] for r in body["results"]] == [201, 409]
    assert tokens.decode(batch.headers["consistency-token"]).versions == ((body["results"][0]["payment"]["id"], 1),)
    assert body["consistency_token"] == batch.headers["consistency-token"]


async def test_a_completed_async_command_answers_its_consistency_token(api):
    response = await api.create(headers={"Prefer": "respond-async"}, amount=77)
    assert "consistency-token" not in response.headers  # nothing written yet
    for _ in range(100):
        status = await api.request("GET", response.headers["location"])
        if status.json()["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert status.json()["status"] == "completed"
    writes = ConsistencyTokens(api.settings.consistency_token_secret).decode(status.headers["consistency-token"])
    assert writes == Writes("org-a", ((status.json()["result"]["id"], 1),))
