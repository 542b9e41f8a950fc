"""An unexpected error is one 500 problem and one log record."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.http import PROBLEM_CONTENT_TYPE, install_problem_handlers


def test_an_unexpected_error_is_a_500_problem_logged_once(caplog) -> None:  # noqa: ANN001
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.ERROR):
        response = TestClient(app).get("/boom")  # would re-raise here if anything escaped the app
    assert response.status_code == 500 and response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert "kaput" not in response.text
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1 and records[0].name == "payments.http" and "RuntimeError" in caplog.text
