"""Issue 11: the command API against a hostile client, through a real HTTP server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from services.command.entrypoints.http.app import create_app
from services.command.entrypoints.http.body_limit import MAX_BODY_BYTES

PROBLEM = "application/problem+json"


@pytest.fixture
async def http(runtime, serve) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    async with serve(create_app(runtime=runtime)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        yield c


def _signed(api, **claims) -> dict[str, str]:  # noqa: ANN001, ANN003
    body = {"org": "org-a", "scope": "payments:write", "exp": int(time.time()) + 60} | claims
    return {"Authorization": "Bearer " + jwt.encode(body, api.settings.jwt_secret, algorithm="HS256")}


async def test_a_streamed_body_is_413_as_soon_as_it_crosses_the_limit(http, api, nothing_written):  # noqa: ANN001
    """A chunked body announces no length: the server must answer once it has read past
    the limit, while the client is still sending (this client never finishes its body)."""
    url = httpx.URL(str(http.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = (f"POST /v1/payments HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                f"Authorization: {api.auth('org-a')['Authorization']}\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(head.encode())
        chunk = b" " * (1 << 16)
        for _ in range(2 * MAX_BODY_BYTES // len(chunk)):  # twice the limit, then silence
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        headers = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)).decode().lower()
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert "content-type: application/problem+json" in headers


async def test_a_streamed_body_under_the_limit_still_works(http, api) -> None:  # noqa: ANN001
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"amount": 100, '
        yield b'"currency": "EUR"}'

    response = await http.post("/v1/payments", content=chunks(), headers={
        **api.auth("org-a"), "Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/v1/payments", "/v1/payments/batch", "/v1/payments/p1"])
async def test_no_token_is_401_before_the_body_is_parsed(http, nothing_written, path) -> None:  # noqa: ANN001
    method = "PATCH" if path.endswith("p1") else "POST"
    response = await http.request(method, path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.headers["content-type"].startswith(PROBLEM), response.text
    big = await http.request(method, path, content=b" " * (2 * MAX_BODY_BYTES))
    assert big.status_code == 401


@pytest.mark.parametrize("scope", [5, {"payments:write": 1}, ["payments:write", 7], None, True])
async def test_a_scope_claim_that_is_not_a_string_or_list_of_strings_is_401(http, api, nothing_written, scope):  # noqa: ANN001
    response = await http.post("/v1/payments", json={"amount": 100, "currency": "EUR"}, headers=_signed(api, scope=scope))
    assert response.status_code == 401 and response.headers["content-type"].startswith(PROBLEM), response.text
    assert "scope" in response.json()["detail"]


async def test_a_list_of_string_scopes_is_accepted(http, api) -> None:  # noqa: ANN001
    response = await http.post("/v1/payments", json={"amount": 100, "currency": "EUR"},
                               headers=_signed(api, scope=["payments:read", "payments:write"]))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("command_id", ["%00", "a%00b", "x" * 300])
async def test_hostile_command_ids_are_4xx(http, api, command_id) -> None:  # noqa: ANN001
    response = await http.get(f"/v1/commands/{command_id}", headers=api.auth("org-a"))
    assert 400 <= response.status_code < 500 and response.headers["content-type"].startswith(PROBLEM), response.text


@pytest.mark.parametrize("body", [{"amount": 100, "currency": "EUR", "description": "a\u0000b"},
                                  {"amount": 100, "currency": "EUR", "metadata": {"k\u0000": "v"}},
                                  {"amount": 100, "currency": "EUR", "metadata": {"k": "v\u0000"}},
                                  {"amount": 100, "currency": "EUR", "user_id": "\u0000"}])
async def test_nul_characters_are_422_not_a_stalled_command(http, api, nothing_written, body) -> None:  # noqa: ANN001
    response = await http.post("/v1/payments", json=body, headers=api.auth("org-a"))
    assert response.status_code == 422 and response.headers["content-type"].startswith(PROBLEM), response.text


@pytest.mark.parametrize("if_match", ["", "null", "0", '"0"', "W/", "1, 2"])
async def test_if_match_outside_its_pattern_is_400(http, api, nothing_written, if_match) -> None:  # noqa: ANN001
    response = await http.delete("/v1/payments/p-none", headers={**api.auth("org-a"), "If-Match": if_match})
    assert response.status_code == 400 and response.json()["type"].endswith("invalid-if-match"), response.text


async def test_a_whole_number_amount_written_with_a_fraction_is_that_integer(http, api) -> None:  # noqa: ANN001
    response = await http.post("/v1/payments", json={"amount": 1250.0, "currency": "EUR"}, headers=api.auth("org-a"))
    assert response.status_code == 201 and response.json()["amount"] == 1250, response.text


async def test_405_names_every_method_of_the_path(http, api) -> None:  # noqa: ANN001
    response = await http.request("OPTIONS", "/v1/payments/p1", headers=api.auth("org-a"))
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, PATCH", response.headers


async def test_the_documented_batch_limit_is_the_servers(http, api) -> None:  # noqa: ANN001
    spec = (await http.get("/openapi.json")).json()
    limit = spec["components"]["schemas"]["BatchCreateRequest"]["properties"]["items"]["maxItems"]
    assert limit == api.settings.command_max_batch_items
    items = [{"amount": 1, "currency": "EUR"}] * (limit + 1)
    assert (await http.post("/v1/payments/batch", json={"items": items}, headers=api.auth("org-a"))).status_code == 422


async def test_one_payment_representation_in_both_apis(http, api) -> None:  # noqa: ANN001
    from services.query.entrypoints.http.app import create_app as query_app

    command_doc = (await http.get("/openapi.json")).json()
    query_doc = query_app(api.settings).openapi()
    assert command_doc["components"]["schemas"]["Payment"] == query_doc["components"]["schemas"]["Payment"]
    response = await http.post("/v1/payments", json={"amount": 441633, "currency": "BHD"}, headers=api.auth("org-a"))
    body = response.json()
    assert set(body) == set(command_doc["components"]["schemas"]["Payment"]["properties"])
    assert body["formatted_amount"] == "441.633 BHD" and body["deleted_at"] is None


async def test_405_on_a_fixed_path_names_its_own_methods(http, api) -> None:  # noqa: ANN001
    response = await http.request("OPTIONS", "/v1/payments/batch", headers=api.auth("org-a"))
    assert response.status_code == 405 and response.headers["allow"] == "POST", response.headers
