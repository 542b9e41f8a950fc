"""Checks of RFC 9457 problem answers, shared by the HTTP tests."""

from __future__ import annotations

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, *, type_suffix: str | None = None, detail_has: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if type_suffix:
        assert body["type"].endswith(type_suffix), body
    if detail_has:
        assert detail_has in body["detail"], body
    return body
