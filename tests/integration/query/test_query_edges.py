"""Issue 11: the query API against a hostile client, through a real HTTP server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from services.query.entrypoints.http.app import create_app
from tests.support.read_side import payments_of, seed

PROBLEM = "application/problem+json"


@pytest.fixture
async def http(qsettings, runtime, serve) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    async with serve(create_app(qsettings, runtime)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        yield c


def _old_style(*values) -> str:  # noqa: ANN002
    """A cursor as the API used to make them: base64 JSON, unsigned."""
    return "c1." + base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


async def test_forged_or_foreign_cursors_are_400_invalid_cursor(runtime, http, auth) -> None:  # noqa: ANN001
    await seed(runtime, payments_of("org-a", 5) + payments_of("org-b", 5))
    h = auth("org-a")
    first = (await http.get("/v1/payments", params={"limit": 2, "currency": "EUR"}, headers=h)).json()
    cursor = first["next_cursor"]
    ok = await http.get("/v1/payments", params={"limit": 2, "currency": "EUR", "starting_after": cursor}, headers=h)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
    forged = [
        _old_style("-created_at", {"$ne": None}, "zzzz"),
        _old_style("-created_at", {"$where": "sleep(100)"}, "p"),
        _old_style("-created_at", {"$expr": {"$eq": [1, 1]}}, "p"),
        _old_style("-amount", 10**30, "p"),
        "c2." + cursor.removeprefix("c2.")[::-1],
        cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
        "",
    ]
    for value in forged:
        response = await http.get("/v1/payments", params={"starting_after": value}, headers=h)
        assert response.status_code == 400, (value, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["type"].endswith("invalid-cursor")
    # Bound to the search that made it: another filter or another organization is refused.
    for params, org in (({"currency": "JPY"}, "org-a"), ({}, "org-a"), ({"currency": "EUR"}, "org-b")):
        response = await http.get("/v1/payments", params={"starting_after": cursor, **params}, headers=auth(org))
        assert response.status_code == 400 and response.json()["type"].endswith("invalid-cursor"), response.text


@pytest.mark.parametrize("created_from", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
async def test_timestamps_outside_utc_range_are_422(http, auth, created_from) -> None:  # noqa: ANN001
    response = await http.get("/v1/payments", params={"created_from": created_from}, headers=auth("org-a"))
    assert response.status_code == 422 and response.headers["content-type"].startswith(PROBLEM), response.text
    assert "created_from" in response.json()["detail"]


async def test_no_token_is_401_whatever_the_parameters(http) -> None:  # noqa: ANN001
    response = await http.get("/v1/payments", params={"created_from": "garbage", "starting_after": "x"})
    assert response.status_code == 401 and response.headers["content-type"].startswith(PROBLEM)
