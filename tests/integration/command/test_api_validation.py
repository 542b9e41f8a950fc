"""Bad input: the right 4xx as problem+json, and nothing written (no payment row, no
outbox row, no command)."""

from __future__ import annotations

import jwt
import pytest

from shared.auth import SCOPE_READ

PROBLEM = "application/problem+json"
VALID = {"amount": 1250, "currency": "EUR"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"amount": -5, "currency": "EUR"}, "amount", "greater than 0"),
        ({"amount": 0, "currency": "EUR"}, "amount", "greater than 0"),
        ({"amount": 12.5, "currency": "EUR"}, "amount", "valid integer"),
        ({"amount": 12.5, "currency": "EUR"}, "amount", "valid integer"),
        ({"amount": "12", "currency": "EUR"}, "amount", "valid integer"),
        ({"amount": True, "currency": "EUR"}, "amount", "valid integer"),
        ({"amount": 10**16, "currency": "EUR"}, "amount", "less than or equal"),
        ({"amount": 100, "currency": "XXX"}, "currency", "unknown currency"),
        ({"amount": 100, "currency": "eur"}, "currency", "upper-case"),
        ({"amount": 100}, "currency", "Field required"),
        ({"currency": "EUR"}, "amount", "Field required"),
        ({"amount": 100, "currency": "EUR", "description": "x" * 1001}, "description", "at most 1000"),
        ({"amount": 100, "currency": "EUR", "metadata": {f"k{i}": i for i in range(51)}}, "metadata", "at most 50"),
        ({"amount": 100, "currency": "EUR", "metadata": {"k": "v" * 501}}, "metadata", "longer than 500"),
        ({"amount": 100, "currency": "EUR", "metadata": {"k": {"nested": 1}}}, "metadata", "string, number"),
        ({"amount": 100, "currency": "EUR", "metadata": ["a"]}, "metadata", "valid dictionary"),
        ({"amount": 100, "currency": "EUR", "description": 5}, "description", "valid string"),
        ({"amount": 100, "currency": "EUR", "organization_id": "org-b"}, "organization_id", "Extra inputs"),
        ({"amount": 100, "currency": "EUR", "id": "has space"}, "id", "pattern"),
    ],
)
async def test_invalid_create_is_422_with_a_useful_detail(api, nothing_written, body, field, message):
    response = await api.request("POST", "/v1/payments", json=body, headers={"Idempotency-Key": f"bad-{field}"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["detail"].startswith(field) and message in problem["detail"], problem
    assert any(e["field"] == field for e in problem["errors"])


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [(b'{"amount": 100, "currency": "EUR"', 400, "malformed JSON body at character"),
     (b"not json", 400, "malformed JSON body"),
     (b"[]", 422, "valid dictionary"), (b"", 422, "required"), (b'"a string"', 422, "valid dictionary")],
)
async def test_malformed_json_is_a_4xx_problem(api, nothing_written, raw, status, detail):
    response = await api.request("POST", "/v1/payments", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert detail in response.json()["detail"], response.json()


@pytest.mark.parametrize(
    "body", [{}, {"amount": -1}, {"amount": 1.5}, {"currency": "USD"}, {"status": "completed"}, {"version": 9}],
)
async def test_invalid_update_is_422_and_changes_nothing(api, db, body):
    payment = await api.created()
    before = await db.counts()
    response = await api.request("PATCH", f"/v1/payments/{payment['id']}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await db.counts() == before


async def test_invalid_batch_item_rejects_the_whole_batch(api, nothing_written):
    items = [VALID, {"amount": 1.5, "currency": "EUR"}]
    response = await api.request("POST", "/v1/payments/batch", json={"items": items})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("items.1.amount")


async def test_oversized_body_is_413(api, nothing_written):
    response = await api.request("POST", "/v1/payments", content=b" " * (1 << 20 + 1),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "missing Authorization"),
        ("Basic dXNlcjpwdw==", "Bearer"),
        ("Bearer not-a-jwt", "invalid token"),
        ("Bearer " + jwt.encode({"org": "org-a", "scope": "payments:write", "exp": 4102444800}, "wrong-secret-" * 3,
                                algorithm="HS256"), "invalid token"),
        ("Bearer " + jwt.encode({"scope": "payments:write", "exp": 4102444800},
                                "dev-secret-change-me-please-32bytes!", algorithm="HS256"), "invalid token"),
        ("Bearer " + jwt.encode({"org": "org-a", "scope": "payments:write", "exp": 1},
                                "dev-secret-change-me-please-32bytes!", algorithm="HS256"), "expired"),
    ],
)
async def test_missing_or_invalid_token_is_401(api, nothing_written, authorization, detail):
    headers = {"Authorization": authorization} if authorization else {}
    response = await api.http.post("/v1/payments", json=VALID, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert detail in response.json()["detail"] and response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_scope_is_403_on_every_command(api, db, nothing_written):
    read_only = api.auth("org-a", (SCOPE_READ,))
    for method, path, body in [
        ("POST", "/v1/payments", VALID), ("POST", "/v1/payments/batch", {"items": [VALID]}),
        ("PATCH", "/v1/payments/p1", {"amount": 1}), ("POST", "/v1/payments/p1/complete", None),
        ("DELETE", "/v1/payments/p1", None), ("GET", "/v1/commands/c1", None),
    ]:
        response = await api.http.request(method, path, json=body, headers=read_only)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)


# Values JSON can carry that no store downstream accepts (issue 9): Python's json parses
# them, so the content contract (shared/payment.py) must refuse them at the edge.
POISON = [
    (b'{"big": 100000000000000000000000000000}', "metadata", "signed 64 bits"),
    (b'{"small": -9223372036854775809}', "metadata", "signed 64 bits"),
    (b'{"n": NaN}', "metadata", "finite number"),
    (b'{"n": Infinity}', "metadata", "finite number"),
    (b'{"n": -Infinity}', "metadata", "finite number"),
    (b'{"k": "a\\u0000b"}', "metadata", "NUL"),
    (b'{"a\\u0000b": 1}', "metadata", "NUL"),
    (b'{"k": "\\ud800"}', "metadata", "Unicode"),
    (b'{' + b",".join(b'"k%d": "%s"' % (i, "é".encode() * 300) for i in range(30)) + b'}', "metadata", "bytes"),
]
POISON_TEXT = [(b'"a\\u0000b"', "NUL"), (b'"\\udfff"', "Unicode")]


@pytest.fixture
async def no_workflow_started(runtime):
    before = (await runtime.temporal.count_workflows()).count
    yield
    assert (await runtime.temporal.count_workflows()).count == before, "a rejected request started a workflow"


def _create_body(metadata: bytes = b"{}", **text: bytes) -> bytes:
    fields = b"".join(b', "%s": %s' % (name.encode(), value) for name, value in text.items())
    return b'{"amount": 100, "currency": "EUR", "metadata": ' + metadata + fields + b"}"


async def _refused(api, method: str, path: str, raw: bytes, field: str, message: str) -> None:
    response = await api.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert field in problem["detail"] and message.lower() in problem["detail"].lower(), problem


@pytest.mark.parametrize(("metadata", "field", "message"), POISON)
async def test_metadata_no_store_accepts_is_422_everywhere(api, nothing_written, no_workflow_started,
                                                          metadata, field, message):
    await _refused(api, "POST", "/v1/payments", _create_body(metadata), field, message)
    await _refused(api, "POST", "/v1/payments/batch", b'{"items": [' + _create_body(metadata) + b"]}",
                   "items.0." + field, message)
    await _refused(api, "PATCH", "/v1/payments/p-absent", b'{"metadata": ' + metadata + b"}", field, message)


@pytest.mark.parametrize(("value", "message"), POISON_TEXT)
@pytest.mark.parametrize("field", ["description", "user_id"])
async def test_text_no_store_accepts_is_422_everywhere(api, nothing_written, no_workflow_started, field, value,
                                                      message):
    await _refused(api, "POST", "/v1/payments", _create_body(**{field: value}), field, message)
    await _refused(api, "POST", "/v1/payments/batch", b'{"items": [' + _create_body(**{field: value}) + b"]}",
                   f"items.0.{field}", message)
    if field == "description":
        await _refused(api, "PATCH", "/v1/payments/p-absent", b'{"description": ' + value + b"}", field, message)
