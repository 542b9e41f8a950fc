"""A server going away under a running API: 503 with Retry-After (never a 500), a
readiness probe that says so within its bound, and nothing lost once it is back.

PostgreSQL is a private embedded server of this test (started by the local stack's own
code, persistent so it can be stopped and started again on the same port); MongoDB is
an address where nothing listens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import Endpoints, LocalStack
from services.command.bootstrap import command_runtime
from services.command.config import CommandSettings
from services.command.entrypoints.http.app import create_app as create_command_app
from services.query.entrypoints.http.app import create_app as create_query_app
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.http import READINESS_CHECK_TIMEOUT
from shared.net import free_port
from shared.settings import Settings


@pytest.fixture
def private_postgres(stack: Endpoints, scratch_dir: Path) -> Iterator[LocalStack]:
    """A local stack of one embedded PostgreSQL (every other server is the session's), which
    the test stops and starts again with ``stop_server`` / ``start_server`` (same port, data)."""
    own = LocalStack(scratch_dir / "pg", persist=True, headless=True, write_stack_file=False,
                     temporal_address=stack.temporal_address, kafka_bootstrap=stack.kafka_bootstrap,
                     mongo_url=stack.mongo_url, redis_url=stack.redis_url)
    own.start()
    yield own
    own.stop()


def _assert_outage(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/dependency-unavailable")
    assert int(response.headers["retry-after"]) >= 1


async def test_postgres_restart_under_the_command_api(settings: Settings, private_postgres: LocalStack) -> None:
    command_settings = CommandSettings.from_settings(
        settings, database_url=private_postgres.endpoints.database_url, command_task_queue=f"outage-{free_port()}",
        command_wait_timeout_seconds=2.0, log_json=False,
    )
    auth = {"Authorization": "Bearer " + mint_token("org-outage", [SCOPE_WRITE], settings=command_settings)}
    body = {"amount": 700, "currency": "EUR"}
    async with command_runtime(command_settings, embedded_worker=True) as runtime:
        app = create_command_app(runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c", timeout=30) as http:
            first = await http.post("/v1/payments", json=body, headers=auth)
            assert first.status_code == 201, first.text

            private_postgres.stop_server("postgres")
            keyed = await http.post("/v1/payments", json=body, headers={**auth, "Idempotency-Key": "k-outage"})
            _assert_outage(keyed)
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["postgres"].startswith("error")
            # Without a key the command is a workflow: it waits (202) and completes once the database is back.
            pending = await http.post("/v1/payments", json=body, headers=auth)
            assert pending.status_code == 202, pending.text
            status_url = pending.headers["location"]

            private_postgres.start_server("postgres")
            retried = await http.post("/v1/payments", json=body, headers={**auth, "Idempotency-Key": "k-outage"})
            assert retried.status_code == 201, retried.text
            deadline = time.monotonic() + 60
            while True:
                status = (await http.get(status_url, headers=auth)).json()
                if status["status"] != "running" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert status["status"] == "completed", status
            replay = await http.post("/v1/payments", json=body, headers={**auth, "Idempotency-Key": "k-outage"})
            assert replay.headers.get("idempotent-replayed") == "true"
            assert replay.json()["id"] == retried.json()["id"]
            assert (await http.get("/readyz")).status_code == 200


async def test_mongodb_unreachable_under_the_query_api(settings: Settings) -> None:
    gone = settings.model_copy(update={"mongo_url": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
                                       "mongo_db": "outage"})
    auth = {"Authorization": "Bearer " + mint_token("org-outage", [SCOPE_READ], settings=gone)}
    app = create_query_app(gone)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q", timeout=30) as http:
            started = time.monotonic()
            ready = await http.get("/readyz")
            probe_seconds = time.monotonic() - started
            assert ready.status_code == 503 and ready.json()["checks"]["mongodb"].startswith("error")
            # A Kubernetes probe gives up after timeoutSeconds (3 in the chart): answer before that.
            assert probe_seconds < READINESS_CHECK_TIMEOUT + 0.9, probe_seconds
            _assert_outage(await http.get("/v1/payments", headers=auth))
            _assert_outage(await http.get("/v1/statistics", headers=auth))


async def test_redis_unreachable_degrades_the_query_api_without_unreadiness(settings: Settings) -> None:
    """Redis is never required: its loss keeps the pods in their Service (status degraded)."""
    gone = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "mongo_db": "outage_redis"})
    auth = {"Authorization": "Bearer " + mint_token("org-outage", [SCOPE_READ], settings=gone)}
    app = create_query_app(gone)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q", timeout=30) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "degraded" and ready.json()["checks"]["redis"].startswith("error")
            assert ready.json()["checks"]["mongodb"] == "ok"
            found = await http.get("/v1/payments", headers=auth)
            assert found.status_code == 200 and found.json()["total"] == 0
