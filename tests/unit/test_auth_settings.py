import json
import time

import jwt
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from shared.auth import SCOPE_READ, SCOPE_WRITE, Principal, mint_token, require_scope
from shared.http import PROBLEM_CONTENT_TYPE, install_problem_handlers
from shared.settings import Settings

SETTINGS = Settings(jwt_secret="unit-test-secret-unit-test-secret!")


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = SETTINGS
    install_problem_handlers(app)

    @app.get("/read")
    def read(p: Principal = Depends(require_scope(SCOPE_READ))) -> dict:
        return {"org": p.org}

    return TestClient(app)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_valid_token_gives_the_org(client: TestClient) -> None:
    token = mint_token("acme", [SCOPE_READ], settings=SETTINGS)
    assert client.get("/read", headers=auth(token)).json() == {"org": "acme"}


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "missing Authorization"),
        ({"Authorization": "Basic abc"}, 401, "Bearer"),
        (auth("not.a.jwt"), 401, "invalid token"),
        (auth(mint_token("acme", [SCOPE_WRITE], settings=SETTINGS)), 403, "payments:read"),
        (auth(mint_token("acme", [SCOPE_READ], settings=SETTINGS, ttl_seconds=-10)), 401, "expired"),
        (auth(jwt.encode({"org": "acme", "scope": SCOPE_READ, "exp": int(time.time()) + 60},
                         "another-secret-another-secret-123", algorithm="HS256")), 401, "invalid token"),
        (auth(jwt.encode({"scope": SCOPE_READ, "exp": int(time.time()) + 60},
                         SETTINGS.jwt_secret, algorithm="HS256")), 401, "org"),
    ],
)
def test_rejections_are_problems(client: TestClient, headers: dict, status: int, detail: str) -> None:
    response = client.get("/read", headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["status"] == status and detail in body["detail"]


def test_settings_precedence_env_over_stack_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "stack.json").write_text(json.dumps(
        {"settings": {"kafka_bootstrap": "127.0.0.1:1111", "mongo_url": "mongodb://127.0.0.1:2222"}}
    ))
    monkeypatch.setenv("PAYMENTS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYMENTS_MONGO_URL", "mongodb://from-env:3333")
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:1111"
    assert settings.mongo_url == "mongodb://from-env:3333"
