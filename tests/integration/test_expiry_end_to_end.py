"""Payments that expire, end to end on the real servers (issue 24): a deadline passes and
the payment is ``expired`` on the query side, once, with actor ``system:expiry``; across a
SIGKILL of the command worker and a restart of the Temporal server; never for a payment
settled first; at a moved deadline only; for every item of a batch; from the Kafka
intake. Only the command worker runs workflows here (neither the API nor the intake
hosts one), so killing it stops every timer's worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from devstack import LocalStack
from services.command.bootstrap import command_runtime
from services.command.config import CommandSettings
from services.command.entrypoints.http.app import create_app as create_command_app
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.settings import Settings
from tests.support.systems import IsolatedSystem, isolated_system

PROCESSES = ["command-api", "command-worker", "relay", "projector", "query-api", "intake"]
AHEAD = 3.0  # seconds from the create to the deadline
WITHIN = 5.0  # the bound: expired on the query side this long after the deadline


@pytest.fixture(scope="module")
async def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IsolatedSystem]:
    async with isolated_system(settings, "expiry", tmp_path_factory.mktemp("expiry-logs"), names=PROCESSES,
                               command_api_embedded_worker=False, intake_embedded_worker=False) as running:
        yield running


class Client:
    def __init__(self, system: IsolatedSystem, http: httpx.AsyncClient) -> None:
        self.system, self.http = system, http
        self.org = f"org-exp-{uuid.uuid4().hex[:8]}"
        token = mint_token(self.org, [SCOPE_READ, SCOPE_WRITE], settings=system.settings)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.command = f"http://127.0.0.1:{system.settings.command_api_port}/v1"
        self.query = f"http://127.0.0.1:{system.settings.query_api_port}/v1"

    async def create(self, expires_at: Any, **body: Any) -> httpx.Response:
        return await self.http.post(f"{self.command}/payments", headers=self.auth,
                                    json={"amount": 500, "currency": "EUR", "expires_at": expires_at, **body})

    async def read(self, payment_id: str) -> dict[str, Any]:
        found = await self.http.get(f"{self.query}/payments/{payment_id}", headers=self.auth)
        return found.json() if found.status_code == 200 else {}

    async def status_by(self, payment_id: str, until: float, want: str) -> str | None:
        """The status the query side shows once it is ``want``, or the last one seen at ``until`` (monotonic)."""
        seen = None
        while time.monotonic() < until:
            seen = (await self.read(payment_id)).get("status")
            if seen == want:
                return seen
            await asyncio.sleep(0.1)
        return seen


@pytest.fixture
async def client(system: IsolatedSystem) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield Client(system, http)


def _ahead(seconds: float) -> tuple[str, float]:
    """An RFC 3339 deadline ``seconds`` from now, and that moment on the monotonic clock."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(), time.monotonic() + seconds


async def _status_events(system: IsolatedSystem, org: str, payment_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(system.database_url)
    try:
        rows = await conn.fetch("SELECT payload FROM outbox WHERE organization_id = $1 AND payment_id = $2"
                                " AND event_type = 'status_changed' ORDER BY id", org, payment_id)
    finally:
        await conn.close()
    return [json.loads(bytes(r["payload"])) for r in rows]


async def _timer_ids(client: Client) -> list[str]:
    """The PaymentExpiry workflows of this system's task queue."""
    from temporalio.client import Client as TemporalClient

    temporal = await TemporalClient.connect(client.system.settings.temporal_address)
    queue = client.system.settings.command_task_queue
    return [w.id async for w in temporal.list_workflows(f"WorkflowType = 'PaymentExpiry' AND TaskQueue = '{queue}'")]


async def test_a_payment_expires_on_the_query_side_within_5_s_of_its_deadline(client: Client) -> None:
    deadline, at = _ahead(AHEAD)
    created = await client.create(deadline)
    assert created.status_code == 201, created.text
    payment = created.json()
    assert datetime.fromisoformat(payment["expires_at"]) == datetime.fromisoformat(deadline)
    assert await client.status_by(payment["id"], at + WITHIN, "expired") == "expired"
    shown = datetime.fromisoformat((await client.read(payment["id"]))["expires_at"])  # MongoDB keeps milliseconds
    assert abs(shown - datetime.fromisoformat(deadline)) < timedelta(milliseconds=1)
    (event,) = await _status_events(client.system, client.org, payment["id"])
    assert (event["actor"], event["data"]["payment"]["status"], event["paymentversion"]) == ("system:expiry", "expired", 2)
    stats = (await client.http.get(f"{client.query}/statistics", headers=client.auth)).json()
    assert stats["by_status"] == {"expired": 1}
    found = await client.http.get(f"{client.query}/payments", params={"status": "expired"}, headers=client.auth)
    assert [p["id"] for p in found.json()["data"]] == [payment["id"]]


async def test_a_timer_survives_a_sigkill_of_the_command_worker(client: Client) -> None:
    running = client.system.running
    deadline, at = _ahead(AHEAD + 1)
    created = await client.create(deadline)
    assert created.status_code == 201, created.text
    await asyncio.sleep(0.5)  # its timer scheduled (by the worker, after the commit)
    worker = running.children.pop("command-worker")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    await asyncio.sleep(max(0.0, at - time.monotonic()) + 0.2)  # the deadline passes with no worker
    assert (await client.read(created.json()["id"]))["status"] == "processing"
    await asyncio.to_thread(running.start, client.system.env, timeout=60, names=["command-worker"])
    # Within the bound of the deadline, or of the worker's return when its start-up (an
    # interpreter, its imports, its connections: seconds on a loaded machine) ends later.
    assert await client.status_by(created.json()["id"], max(at, time.monotonic()) + WITHIN, "expired") == "expired"
    assert len(await _status_events(client.system, client.org, created.json()["id"])) == 1


async def test_a_payment_completed_before_its_deadline_stays_completed(client: Client) -> None:
    deadline, at = _ahead(AHEAD)
    payment = (await client.create(deadline)).json()
    done = await client.http.post(f"{client.command}/payments/{payment['id']}/complete", headers=client.auth)
    assert done.status_code == 200, done.text
    await asyncio.sleep(max(0.0, at - time.monotonic()) + 2.5)
    read = await client.read(payment["id"])
    assert (read["status"], read["version"]) == ("completed", 2)
    assert [e["actor"] for e in await _status_events(client.system, client.org, payment["id"])] != ["system:expiry"]
    assert len(await _status_events(client.system, client.org, payment["id"])) == 1


async def test_a_moved_deadline_expires_at_the_new_one_only(client: Client) -> None:
    first, first_at = _ahead(AHEAD)
    payment = (await client.create(first)).json()
    later, later_at = _ahead(AHEAD + 4)
    moved = await client.http.patch(f"{client.command}/payments/{payment['id']}", headers=client.auth,
                                    json={"expires_at": later})
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["expires_at"]) == datetime.fromisoformat(later)
    await asyncio.sleep(max(0.0, first_at - time.monotonic()) + 2.0)
    assert (await client.read(payment["id"]))["status"] == "processing"
    assert await client.status_by(payment["id"], later_at + WITHIN, "expired") == "expired"
    assert time.monotonic() >= later_at - 0.5  # not at the first deadline
    assert len(await _status_events(client.system, client.org, payment["id"])) == 1


async def test_every_item_of_a_batch_expires(client: Client) -> None:
    deadline, at = _ahead(AHEAD)
    batch = await client.http.post(f"{client.command}/payments/batch", headers=client.auth, json={"items": [
        {"amount": 100 + i, "currency": "EUR", "expires_at": deadline} for i in range(3)]})
    assert batch.status_code == 200, batch.text
    ids = [r["payment"]["id"] for r in batch.json()["results"]]
    statuses = await asyncio.gather(*(client.status_by(pid, at + WITHIN, "expired") for pid in ids))
    assert statuses == ["expired"] * 3


async def test_concurrent_creates_group_committed_all_expire(client: Client) -> None:
    deadline, at = _ahead(AHEAD)
    created = await asyncio.gather(*(client.create(deadline, amount=200 + i) for i in range(16)))
    assert {c.status_code for c in created} == {201}
    ids = [c.json()["id"] for c in created]
    statuses = await asyncio.gather(*(client.status_by(pid, at + WITHIN, "expired") for pid in ids))
    assert statuses == ["expired"] * 16
    # Sixteen at once: all but the first wait for it and run as group-committed batches,
    # whose timers are named after the batch's workflow.
    timers = await _timer_ids(client)
    assert any("/payments-batch/" in t for t in timers), timers
    assert [len(await _status_events(client.system, client.org, pid)) for pid in ids] == [1] * 16


async def test_a_payment_created_from_the_kafka_intake_expires(client: Client) -> None:
    from aiokafka import AIOKafkaProducer

    deadline, at = _ahead(AHEAD + 1)
    payment_id = f"pay-{uuid.uuid4().hex[:8]}"
    commands = [(payment_id, deadline), (f"{payment_id}-late", "2020-01-01T00:00:00Z")]
    producer = AIOKafkaProducer(bootstrap_servers=client.system.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for subject, expires_at in commands:
            await producer.send_and_wait(client.system.settings.commands_topic, key=subject.encode(), value=json.dumps({
                "specversion": "1.0", "id": f"cmd-{subject}", "source": "/billing", "organizationid": client.org,
                "type": "com.gyroscops.payment.command.create", "subject": subject,
                "data": {"amount": 900, "currency": "EUR", "expires_at": expires_at}}).encode())
    finally:
        await producer.stop()
    assert await client.status_by(payment_id, at + WITHIN, "expired") == "expired"
    assert await client.read(f"{payment_id}-late") == {}  # refused (422 result), nothing written


@pytest.mark.parametrize(("value", "message"), [
    ("2020-01-01T00:00:00Z", "in the future"), ("2999-01-01T00:00:00Z", "at most"),
    ("2030-01-01T00:00:00", "time zone"), ("soon", "datetime"), (1_900_000_000, "RFC 3339"),
])
async def test_a_bad_deadline_is_a_422_naming_the_field_and_nothing_is_written(
        client: Client, value: Any, message: str) -> None:
    created = await client.create(value)
    assert created.status_code == 422, created.text
    problem = created.json()
    assert problem["detail"].startswith("expires_at") and message in problem["detail"], problem
    batch = await client.http.post(f"{client.command}/payments/batch", headers=client.auth, json={"items": [
        {"amount": 100, "currency": "EUR"}, {"amount": 100, "currency": "EUR", "expires_at": value}]})
    assert batch.status_code == 422, batch.text
    assert [e["field"] for e in batch.json()["errors"]] == ["items.1.expires_at"]
    page = await client.http.get(f"{client.query}/payments", headers=client.auth)
    assert page.json()["data"] == []


async def test_an_update_cannot_move_a_deadline_into_the_past(client: Client) -> None:
    deadline, _ = _ahead(60)
    payment = (await client.create(deadline)).json()
    moved = await client.http.patch(f"{client.command}/payments/{payment['id']}", headers=client.auth,
                                    json={"expires_at": "2020-01-01T00:00:00Z"})
    assert moved.status_code == 422 and moved.json()["errors"][0]["field"] == "expires_at", moved.text


async def test_a_timer_survives_a_restart_of_the_temporal_server(settings: Settings,
                                                                  private_temporal: LocalStack) -> None:
    assert private_temporal.endpoints is not None
    command_settings = CommandSettings.from_settings(
        settings, temporal_address=private_temporal.endpoints.temporal_address,
        command_task_queue=f"expiry-restart-{uuid.uuid4().hex[:8]}", log_json=False)
    org = f"org-exp-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_WRITE], settings=command_settings)}
    async with command_runtime(command_settings, embedded_worker=True) as runtime:
        app = create_command_app(runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c", timeout=30) as http:
            deadline, at = _ahead(AHEAD + 1)
            created = await http.post("/v1/payments", headers=auth,
                                      json={"amount": 700, "currency": "EUR", "expires_at": deadline})
            assert created.status_code == 201, created.text
            await asyncio.sleep(0.5)  # its timer scheduled
            await asyncio.to_thread(private_temporal.stop_server, "temporal")
            await asyncio.sleep(max(0.0, at - time.monotonic()) + 0.5)  # the deadline passes, no server
            await asyncio.to_thread(private_temporal.start_server, "temporal")
            pool = runtime.store.pool
            status = None
            until = time.monotonic() + 30
            while time.monotonic() < until and status != "expired":
                status = await pool.fetchval("SELECT status FROM payments WHERE organization_id = $1 AND id = $2",
                                             org, created.json()["id"])
                await asyncio.sleep(0.2)
            assert status == "expired"
            expired = await pool.fetchval("SELECT count(*) FROM outbox WHERE organization_id = $1 AND"
                                          " event_type = 'status_changed'", org)
            assert expired == 1


async def test_a_retried_create_leaves_one_timer(client: Client) -> None:
    deadline, at = _ahead(AHEAD)
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex[:8]}"}
    first = await client.http.post(f"{client.command}/payments", headers={**client.auth, **key},
                                   json={"amount": 500, "currency": "EUR", "expires_at": deadline})
    again = await client.http.post(f"{client.command}/payments", headers={**client.auth, **key},
                                   json={"amount": 500, "currency": "EUR", "expires_at": deadline})
    assert (first.status_code, again.json()) == (201, first.json())
    assert await client.status_by(first.json()["id"], at + WITHIN, "expired") == "expired"
    timers = [t for t in await _timer_ids(client) if f"/payments/{client.org}/" in t]
    assert len(timers) == 1, timers
    assert len(await _status_events(client.system, client.org, first.json()["id"])) == 1
