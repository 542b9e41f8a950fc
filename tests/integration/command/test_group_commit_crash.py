"""Group commit survives a SIGKILL of the API mid-batch (issue 14, "Nothing lost in a batch").

A real `payments command-api` (embedded worker, group commit on) takes a burst of keyed
creates and is killed while batches run; a second API then receives every client's
retry (same Idempotency-Key, same body). Every acknowledged command must be applied
exactly once with the payment the client was told about, and every other one at most
once, including after the orphaned batch workflows have been finished by another worker
of the task queue (the session runtime's, in this process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx

from shared.auth import SCOPE_WRITE, mint_token
from shared.net import free_port

ORG = "org-crash"


def _api(settings, port: int) -> subprocess.Popen:
    env = {**os.environ, "PAYMENTS_DATABASE_URL": settings.database_url,
           "PAYMENTS_TEMPORAL_ADDRESS": settings.temporal_address,
           "PAYMENTS_COMMAND_TASK_QUEUE": settings.command_task_queue,
           "PAYMENTS_COMMAND_GROUP_COMMIT": "true", "PAYMENTS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "command-api", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the API exited early"
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the API never became ready")


async def test_sigkill_of_the_api_mid_batch_then_retries_apply_each_command_once(runtime, db):
    run = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {mint_token(ORG, [SCOPE_WRITE], settings=runtime.settings)}"}
    requests = [(f"crash-{run}-{n}", {"amount": 100 + n, "currency": "EUR", "description": f"crash-{run}-{n}"})
                for n in range(240)]
    acked: dict[str, str] = {}  # key -> payment id the client was told

    first_port = free_port()
    first = _api(runtime.settings, first_port)
    try:
        url = f"http://127.0.0.1:{first_port}"
        await _ready(url, first)
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     limits=httpx.Limits(max_connections=100)) as http:
            async def send(key: str, body: dict) -> None:
                try:
                    response = await http.post("/v1/payments", json=body,
                                               headers={**headers, "Idempotency-Key": key})
                except httpx.HTTPError:
                    return  # the API died under this request: no answer
                if response.status_code == 201:
                    acked[key] = response.json()["id"]

            tasks = [asyncio.create_task(send(key, body)) for key, body in requests]
            # At the first answer: a batch answers up to 64 callers at once, so waiting for
            # more could see the whole burst done; 240 requests are several batches.
            while not acked and not all(t.done() for t in tasks):
                await asyncio.sleep(0.002)
            first.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(10)
    assert 0 < len(acked) < len(requests), f"the kill should land mid-burst ({len(acked)} acknowledged)"

    second_port = free_port()
    second = _api(runtime.settings, second_port)
    answered: dict[str, str] = {}
    try:
        url = f"http://127.0.0.1:{second_port}"
        await _ready(url, second)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            async def retry(key: str, body: dict) -> None:
                for _ in range(10):  # a 202 (still running elsewhere) is retried, as a client would
                    response = await http.post("/v1/payments", json=body, headers={**headers, "Idempotency-Key": key})
                    if response.status_code == 201:
                        answered[key] = response.json()["id"]
                        return
                    assert response.status_code == 202, response.text
                    await asyncio.sleep(1)

            await asyncio.gather(*[retry(key, body) for key, body in requests])
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert set(answered) == {key for key, _ in requests}
    assert all(answered[key] == payment_id for key, payment_id in acked.items())

    async def applied() -> dict[str, int]:
        async with db.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT p.description, count(DISTINCT p.id) AS payments, count(o.id) AS events FROM payments p"
                " LEFT JOIN outbox o ON o.organization_id = p.organization_id AND o.payment_id = p.id"
                " WHERE p.organization_id = $1 AND p.description LIKE $2 GROUP BY p.description",
                ORG, f"crash-{run}-%")
        return {r["description"]: (r["payments"], r["events"]) for r in rows}

    expected = {body["description"]: (1, 1) for _, body in requests}
    assert await applied() == expected
    # The orphaned batches finish on the session's worker (after their workflow task
    # timeout); their claims then find the stored results and write nothing more.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [e async for e in runtime.temporal.list_workflows(
            "WorkflowType = 'CommandBatch' AND ExecutionStatus = 'Running'")]
        if not running:
            break
        await asyncio.sleep(1)
    assert not running, f"{len(running)} batch workflows never finished"
    assert await applied() == expected
