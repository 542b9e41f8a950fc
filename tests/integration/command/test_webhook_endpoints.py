"""Issue 27: /v1/webhook-endpoints on the command API, on the real PostgreSQL: the secret
shown once and stored encrypted, tenants apart, hostile URLs refused, the per-org limit."""

from __future__ import annotations

import uuid

import pytest

from shared.auth import SCOPE_WEBHOOKS, SCOPE_WRITE

PUBLIC = "https://93.184.215.14/hooks"  # an address literal: no DNS needed, and public
HOOKS = (SCOPE_WEBHOOKS,)


def _org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


async def _create(api, org: str, **body):  # noqa: ANN001, ANN003, ANN202
    payload = {"url": PUBLIC, "events": ["payment.created", "*"], "description": "ERP"} | body
    return await api.request("POST", "/v1/webhook-endpoints", org=org, scopes=HOOKS, json=payload)


async def test_created_with_its_secret_shown_once_and_stored_encrypted(api, db) -> None:  # noqa: ANN001
    org = _org()
    created = await _create(api, org)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["enabled"] is True
    assert body["events"] == ["*", "payment.created"]
    shown = await api.request("GET", f"/v1/webhook-endpoints/{body['id']}", org=org, scopes=HOOKS)
    assert shown.status_code == 200 and "secret" not in shown.json()
    listed = await api.request("GET", "/v1/webhook-endpoints", org=org, scopes=HOOKS)
    assert [e["id"] for e in listed.json()["items"]] == [body["id"]]
    async with db.pool.acquire() as conn:
        dump = await conn.fetchval("SELECT row_to_json(e)::text FROM webhook_endpoints e WHERE id = $1", body["id"])
    assert body["secret"] not in dump and body["secret"].removeprefix("whsec_") not in dump


async def test_another_organizations_endpoint_is_404(api) -> None:  # noqa: ANN001
    mine = (await _create(api, _org())).json()["id"]
    other = _org()
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/disable"), ("POST", "/enable"),
                         ("POST", "/rotate-secret"), ("GET", "/deliveries")]:
        response = await api.request(method, f"/v1/webhook-endpoints/{mine}{path}", org=other, scopes=HOOKS)
        assert response.status_code == 404, (method, path, response.text)


async def test_the_webhooks_scope_is_needed(api) -> None:  # noqa: ANN001
    response = await api.request("GET", "/v1/webhook-endpoints", org=_org(), scopes=(SCOPE_WRITE,))
    assert response.status_code == 403


@pytest.mark.parametrize("url", [
    "http://93.184.215.14/hooks", "https://127.0.0.1/h", "https://[::1]/h", "https://10.1.2.3/h",
    "https://169.254.169.254/latest/meta-data", "https://[::ffff:127.0.0.1]/h", "https://0.0.0.0/h",
    "https://localhost/h", "https://user:pw@93.184.215.14/h", "https://no-such-host.invalid/h",
])
async def test_hostile_urls_are_refused_naming_the_field(api, db, url: str) -> None:  # noqa: ANN001
    org = _org()
    response = await _create(api, org, url=url)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "url"
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1", org) == 0


@pytest.mark.parametrize("events", [[], ["created"], ["payment.Created"], ["payment."], ["**"], ["payment.teleported"]])
async def test_unknown_event_names_are_422(api, events: list[str]) -> None:  # noqa: ANN001
    response = await _create(api, _org(), events=events)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("events")


async def test_disable_enable_rotate_delete(api) -> None:  # noqa: ANN001
    org = _org()
    created = (await _create(api, org)).json()
    base = f"/v1/webhook-endpoints/{created['id']}"
    disabled = await api.request("POST", f"{base}/disable", org=org, scopes=HOOKS)
    assert disabled.json()["enabled"] is False and disabled.json()["disabled_reason"]
    assert (await api.request("POST", f"{base}/enable", org=org, scopes=HOOKS)).json()["enabled"] is True
    rotated = await api.request("POST", f"{base}/rotate-secret", org=org, scopes=HOOKS, json={"overlap_seconds": 60})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] != created["secret"] and rotated.json()["previous_secret_until"]
    assert (await api.request("DELETE", base, org=org, scopes=HOOKS)).status_code == 204
    assert (await api.request("GET", base, org=org, scopes=HOOKS)).status_code == 404


async def test_an_organization_has_a_limited_number_of_endpoints(api) -> None:  # noqa: ANN001
    org = _org()
    limit = api.settings.webhooks_max_endpoints_per_org
    for _ in range(limit):
        assert (await _create(api, org)).status_code == 201
    refused = await _create(api, org)
    assert refused.status_code == 409 and refused.json()["type"].endswith("webhook-endpoint-limit")


async def _pending_delivery(api, db, org: str) -> tuple[str, str]:  # noqa: ANN001
    from services.webhooks.adapters.store import WebhookStore
    from services.webhooks.messages import NewDelivery

    endpoint = (await _create(api, org)).json()["id"]
    [(_, ref)] = await WebhookStore(db.pool).add_deliveries([NewDelivery(
        org, endpoint, f"ev-{uuid.uuid4()}", "payment.created", "p-1", 1, b"{}")])
    return endpoint, ref.delivery_id


async def test_an_endpoint_failing_continuously_is_disabled_and_its_delivery_failed(api, db) -> None:  # noqa: ANN001
    from services.webhooks.adapters.store import WebhookStore

    store, org = WebhookStore(db.pool), _org()
    endpoint, delivery = await _pending_delivery(api, db, org)
    fail = {"ok": False, "status_code": 500, "error": "HTTP 500", "retry_in_seconds": 5.0}
    assert await store.record_attempt(delivery, **fail, disable_after_seconds=3600) is False
    assert await store.record_attempt(delivery, **fail, disable_after_seconds=0) is True  # failing since > 0 s
    shown = (await api.request("GET", f"/v1/webhook-endpoints/{endpoint}", org=org, scopes=HOOKS)).json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "failing continuously"
    [logged] = (await api.request("GET", f"/v1/webhook-endpoints/{endpoint}/deliveries", org=org,
                                  scopes=HOOKS)).json()["items"]
    assert (logged["status"], logged["attempts"], logged["last_status_code"]) == ("failed", 2, 500)
    enabled = await api.request("POST", f"/v1/webhook-endpoints/{endpoint}/enable", org=org, scopes=HOOKS)
    assert enabled.json()["enabled"] is True and enabled.json()["failing_since"] is None


async def test_a_success_resets_the_failure_clock(api, db) -> None:  # noqa: ANN001
    from services.webhooks.adapters.store import WebhookStore

    store, org = WebhookStore(db.pool), _org()
    endpoint, delivery = await _pending_delivery(api, db, org)
    await store.record_attempt(delivery, ok=False, status_code=503, error="x", retry_in_seconds=1,
                               disable_after_seconds=3600)
    await store.record_attempt(delivery, ok=True, status_code=200, error=None, retry_in_seconds=None,
                               disable_after_seconds=0)
    shown = (await api.request("GET", f"/v1/webhook-endpoints/{endpoint}", org=org, scopes=HOOKS)).json()
    assert shown["enabled"] is True and shown["failing_since"] is None


async def test_failed_deliveries_since_a_time_are_redelivered(api, db) -> None:  # noqa: ANN001
    from services.webhooks.adapters.store import WebhookStore

    store, org = WebhookStore(db.pool), _org()
    endpoint, delivery = await _pending_delivery(api, db, org)
    await store.record_attempt(delivery, ok=False, status_code=500, error="x", retry_in_seconds=None,
                               disable_after_seconds=3600)  # given up
    base = f"/v1/webhook-endpoints/{endpoint}"
    again = await api.request("POST", f"{base}/redeliver", org=org, scopes=HOOKS,
                              json={"failed_since": "2000-01-01T00:00:00Z"})
    assert again.status_code == 202 and again.json() == {"redelivered": 1}
    [logged] = (await api.request("GET", f"{base}/deliveries", org=org, scopes=HOOKS)).json()["items"]
    assert logged["status"] == "pending" and logged["attempts"] == 1
    nothing = await api.request("POST", f"{base}/redeliver", org=org, scopes=HOOKS,
                                json={"failed_since": "2000-01-01T00:00:00Z"})
    assert nothing.json() == {"redelivered": 0}
    other = await api.request("POST", f"{base}/deliveries/{delivery}/redeliver", org=_org(), scopes=HOOKS)
    assert other.status_code == 404
