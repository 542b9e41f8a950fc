"""Issue 27 on the real stack: the command API, the relay, `payments webhooks` (and the query side) as child
processes, a real receiver (tests/support/webhook_receiver.py) on loopback. Every event
arrives, per payment in version order, signed; failures are retried in order; a SIGKILL
loses nothing; redirects are not followed, a silent receiver times out, a huge answer is
not read; a rotated secret signs alongside the old one for the overlap only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.webhooks.domain import ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from shared.auth import SCOPE_WEBHOOKS, SCOPE_WRITE, mint_token
from shared.consistency import ConsistencyTokens
from shared.settings import Settings
from tests.support.systems import IsolatedSystem, isolated_system
from tests.support.webhook_receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
async def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IsolatedSystem]:
    async with isolated_system(
            settings, "webhooks", tmp_path_factory.mktemp("webhooks-logs"),
            names=["command-api", "relay", "webhooks", "query-api", "projector"],
            webhooks_allow_private=True, webhooks_retry_base_seconds=0.5, webhooks_retry_cap_seconds=1.0,
            webhooks_timeout_seconds=1.0, webhooks_connect_timeout_seconds=1.0) as running:
        yield running


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


class Client:
    def __init__(self, system: IsolatedSystem, org: str) -> None:
        self.settings = system.settings
        self.org = org
        token = mint_token(org, [SCOPE_WRITE, SCOPE_WEBHOOKS], settings=self.settings)
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.settings.command_api_port}", timeout=30,
                                      headers={"Authorization": f"Bearer {token}"})

    async def register(self, url: str, **body: Any) -> dict[str, Any]:
        created = await self.http.post("/v1/webhook-endpoints", json={"url": url, "events": ["*"]} | body)
        assert created.status_code == 201, created.text
        return created.json()

    async def payment(self, versions: int = 1) -> str:
        created = await self.http.post("/v1/payments", json={"amount": 100, "currency": "EUR"})
        assert created.status_code == 201, created.text
        payment_id = created.json()["id"]
        for v in range(2, versions + 1):
            updated = await self.http.patch(f"/v1/payments/{payment_id}", json={"description": f"v{v}"},
                                            headers={"If-Match": str(v - 1)})
            assert updated.status_code == 200, updated.text
        return payment_id

    async def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        found = await self.http.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params={"limit": 200})
        assert found.status_code == 200, found.text
        return found.json()["items"]


@pytest.fixture
async def client(system: IsolatedSystem) -> AsyncIterator[Client]:
    made = Client(system, f"org-{uuid.uuid4().hex[:8]}")
    yield made
    await made.http.aclose()


async def until(check: Callable[[], Any], timeout: float = 120, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        value = await value if asyncio.iscoroutine(value) else value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def versions_by_payment(receiver: Receiver, path: str) -> dict[str, list[int]]:
    seen: defaultdict[str, list[int]] = defaultdict(list)
    for r in receiver.at(path):
        seen[r.event["subject"]].append(r.event["paymentversion"])
    return seen


def assert_in_order(seen: dict[str, list[int]]) -> None:
    for payment_id, versions in seen.items():
        assert versions == sorted(versions), f"{payment_id}: arrived as {versions}"


async def test_every_event_of_concurrent_payments_arrives_in_order_and_signed(
        system: IsolatedSystem, receiver: Receiver, client: Client) -> None:
    endpoint = await client.register(f"{receiver.base_url}/all")
    payments = await asyncio.gather(*(client.payment(versions=3) for _ in range(50)))
    await until(lambda: all(set(versions_by_payment(receiver, "/all").get(p, ())) == {1, 2, 3} for p in payments),
                what="every version of 50 payments")
    assert_in_order(versions_by_payment(receiver, "/all"))
    tokens = ConsistencyTokens(system.settings.consistency_token_secret)
    bodies: dict[str, bytes] = {}
    for r in receiver.at("/all"):
        assert verify_signature(endpoint["secret"], r.headers[SIGNATURE_HEADER], r.body, now=int(time.time()))
        event_id = r.headers[EVENT_ID_HEADER]
        assert event_id == r.event["id"] and bodies.setdefault(event_id, r.body) == r.body  # duplicates: same event
        writes = tokens.decode(r.event["consistencytoken"])
        assert writes.versions == ((r.event["subject"], r.event["paymentversion"]),)
        assert "traceparent" not in r.event
    assert len(bodies) == 150
    log = await client.deliveries(endpoint["id"])
    assert {d["status"] for d in log} == {"succeeded"}


async def test_failures_are_retried_in_order_and_a_sigkill_loses_nothing(
        system: IsolatedSystem, receiver: Receiver, client: Client) -> None:
    path = "/flaky"
    receiver.failing_until[path] = time.monotonic() + 3600
    endpoint = await client.register(receiver.base_url + path)
    payments = await asyncio.gather(*(client.payment(versions=3) for _ in range(5)))
    await until(lambda: len({r.event["subject"] for r in receiver.at(path)}) == 5, what="first attempts")
    child = system.running.children["webhooks"]
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    await asyncio.to_thread(system.running.start, system.env, timeout=90, names=["webhooks"])
    receiver.failing_until[path] = time.monotonic() + 2
    await until(lambda: all(versions_by_payment(receiver, path).get(p, [0])[-1] == 3 for p in payments),
                what="every version after the failures")
    seen = versions_by_payment(receiver, path)
    assert_in_order(seen)  # v2 never attempted before v1 succeeded, retries included
    assert all(set(v) == {1, 2, 3} for v in seen.values())
    assert any(int(r.headers[ATTEMPT_HEADER]) > 1 for r in receiver.at(path))
    log = await until(lambda: _all_succeeded(client, endpoint["id"], 15), what="the delivery log")
    assert max(d["attempts"] for d in log) > 1


async def _all_succeeded(client: Client, endpoint_id: str, count: int) -> list[dict[str, Any]] | None:
    log = await client.deliveries(endpoint_id)
    return log if len(log) == count and all(d["status"] == "succeeded" for d in log) else None


async def test_a_redirect_is_not_followed(receiver: Receiver, client: Client) -> None:
    endpoint = await client.register(receiver.base_url + "/redirect")
    await client.payment()

    async def attempted() -> list[dict[str, Any]] | None:
        log = await client.deliveries(endpoint["id"])
        return log if log and log[0]["attempts"] >= 1 else None

    log = await until(attempted, what="an attempt")
    assert log[0]["last_status_code"] == 302 and "redirect" in log[0]["last_error"]
    assert log[0]["status"] == "pending" and log[0]["next_attempt_at"]
    assert receiver.at("/trap") == []
    await client.http.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


async def test_a_receiver_that_never_answers_times_out(receiver: Receiver, client: Client) -> None:
    endpoint = await client.register(receiver.base_url + "/never")
    started = time.monotonic()
    await client.payment()

    async def timed_out() -> list[dict[str, Any]] | None:
        log = await client.deliveries(endpoint["id"])
        return log if log and log[0]["attempts"] >= 1 else None

    log = await until(timed_out, timeout=60, what="a timed-out attempt")
    assert "timed out" in log[0]["last_error"] or "no answer" in log[0]["last_error"]
    assert time.monotonic() - started < 30
    await client.http.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_a_huge_answer_is_not_read(system: IsolatedSystem, receiver: Receiver, client: Client) -> None:
    pid = system.running.children["webhooks"].pid
    before = _rss_kib(pid)
    endpoint = await client.register(receiver.base_url + "/huge")
    await client.payment()
    await until(lambda: _all_succeeded(client, endpoint["id"], 1), what="the delivery")
    grown_mib = (_rss_kib(pid) - before) / 1024
    assert grown_mib < 30, f"the webhooks process grew by {grown_mib:.0f} MiB"
    assert receiver.huge_bytes_sent < 100 << 20, "the whole 100 MiB was read"


async def test_a_rotated_secret_signs_alongside_the_old_one_for_the_overlap(receiver: Receiver,
                                                                              client: Client) -> None:
    path = f"/rotation-{uuid.uuid4().hex[:6]}"
    endpoint = await client.register(receiver.base_url + path)
    old = endpoint["secret"]
    rotated = await client.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                                     json={"overlap_seconds": 4})
    new = rotated.json()["secret"]
    during = await client.payment()
    await until(lambda: any(r.event["subject"] == during for r in receiver.at(path)), what="a delivery")
    await asyncio.sleep(max(0.0, 4.5 - (time.time() - _epoch(rotated.json()["updated_at"]))))
    after = await client.payment()
    await until(lambda: any(r.event["subject"] == after for r in receiver.at(path)), what="a delivery")
    now = int(time.time())
    for r in receiver.at(path):
        header = r.headers[SIGNATURE_HEADER]
        assert verify_signature(new, header, r.body, now=now)
        assert verify_signature(old, header, r.body, now=now) == (r.event["subject"] == during)


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def test_redelivery_and_the_cli(system: IsolatedSystem, receiver: Receiver, client: Client) -> None:
    path = f"/again-{uuid.uuid4().hex[:6]}"
    endpoint = await client.register(receiver.base_url + path)
    await client.payment()
    (delivery,) = await until(lambda: _all_succeeded(client, endpoint["id"], 1), what="the delivery")
    again = await client.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202 and again.json() == {"redelivered": 1}
    await until(lambda: len(receiver.at(path)) == 2, what="the redelivery")
    assert len({r.headers[EVENT_ID_HEADER] for r in receiver.at(path)}) == 1  # the same event, twice
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "webhooks", "list", "--org", client.org, "--endpoint",
                         endpoint["id"]], env={**os.environ, **system.env, "PAYMENTS_LOG_JSON": "false"},
        capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)] == [delivery["id"]]


async def test_the_demo_shows_its_webhooks(system: IsolatedSystem) -> None:
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "demo", "-n", "4"],
        env={**os.environ, **system.env, "PAYMENTS_LOG_JSON": "false", "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    line = next(x for x in shown.stdout.splitlines() if x.startswith("webhooks of acme"))
    # 4 payments, the one the demo refunds twice (its refunded events arrive as
    # payment.refunded) and the one that expires (its created event at least)
    assert "'payments': 6" in line and "'payments in version order': 6" in line and "'refunded'" in line, line
    summary = line.split(": ", 1)[1]
    received = int(summary.split("'received': ")[1].split(",")[0])
    verified = int(summary.split("'signatures verified': ")[1].split(",")[0])
    assert received >= 6 and verified == received, line


async def test_a_receiver_reads_the_delivered_version_with_its_consistency_token(
        system: IsolatedSystem, receiver: Receiver, client: Client) -> None:
    from shared.auth import SCOPE_READ

    path = f"/read-{uuid.uuid4().hex[:6]}"
    await client.register(receiver.base_url + path)
    payment_id = await client.payment(versions=2)
    await until(lambda: {r.event["paymentversion"] for r in receiver.at(path)} == {1, 2}, what="both versions")
    latest = max(receiver.at(path), key=lambda r: r.event["paymentversion"]).event
    token = mint_token(client.org, [SCOPE_READ], settings=system.settings)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{system.settings.query_api_port}", timeout=30) as http:
        read = await http.get(f"/v1/payments/{payment_id}", params={"consistent_with": latest["consistencytoken"]},
                              headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 200, read.text
    assert read.json()["version"] >= 2
