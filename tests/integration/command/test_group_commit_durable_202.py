"""A 202 of a group-committed command is durable and findable on every replica (issue 14;
services/command/temporal/group_commit.py, ``GroupCommit._own``).

A real `payments command-api` (embedded worker, group commit on, a short
PAYMENTS_COMMAND_WAIT_TIMEOUT_SECONDS) shares the session's task queue; the session's
ASGI app (the ``api`` fixture, on the session runtime) is the other replica. Creates are
held open by uncommitted payment rows with their ids (a create's INSERT waits for that
transaction), so that the test decides what is in flight: h1 runs alone, h2 and h3 then
run as one batch, and q queues behind that batch. Each caller's wait ends first (202).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from temporalio.client import WorkflowExecutionStatus

from services.command.commands import CommandState
from services.command.temporal.client import workflow_id
from shared.auth import SCOPE_WRITE, mint_token
from shared.net import free_port

ORG = "org-durable-202"
WAIT = 3.0  # the API's wait timeout: what the test's timing is built on


class Hold:
    """Uncommitted payment rows: a create with one of their ids waits for this transaction
    (``INSERT ... ON CONFLICT DO NOTHING``), and inserts its own once it rolls back."""

    def __init__(self, db, payment_ids: list[str]) -> None:
        self.db, self.payment_ids = db, payment_ids

    async def __aenter__(self) -> Hold:
        self.conn = await self.db.pool.acquire()
        self.tx = self.conn.transaction()
        await self.tx.start()
        for payment_id in self.payment_ids:
            await self.conn.execute(
                "INSERT INTO payments (id, organization_id, amount, currency, status, version, created_at, updated_at)"
                " VALUES ($1, $2, 1, 'EUR', 'processing', 1, now(), now())", payment_id, ORG)
        return self

    async def release(self) -> None:
        if self.tx is not None:
            await self.tx.rollback()
            self.tx = None

    async def __aexit__(self, *exc) -> None:
        await self.release()
        await self.db.pool.release(self.conn)


@contextlib.asynccontextmanager
async def _api_process(settings) -> AsyncIterator[tuple[subprocess.Popen, httpx.AsyncClient]]:
    port = free_port()
    env = {**os.environ, "PAYMENTS_DATABASE_URL": settings.database_url,
           "PAYMENTS_TEMPORAL_ADDRESS": settings.temporal_address,
           "PAYMENTS_COMMAND_TASK_QUEUE": settings.command_task_queue,
           "PAYMENTS_COMMAND_GROUP_COMMIT": "true", "PAYMENTS_COMMAND_WAIT_TIMEOUT_SECONDS": str(WAIT),
           "PAYMENTS_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "command-api", "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = mint_token(ORG, [SCOPE_WRITE], settings=settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the API exited early"
                assert time.monotonic() < deadline, "the API never became ready"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            yield process, http
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _create(http: httpx.AsyncClient, payment_id: str) -> asyncio.Task[httpx.Response]:
    body = {"id": payment_id, "amount": 100, "currency": "EUR", "description": payment_id}
    return asyncio.create_task(http.post("/v1/payments", json=body))


async def _held_behind_a_batch(http: httpx.AsyncClient, h1: str, batched: list[str], q: str) -> list[httpx.Response]:
    """h1 alone, ``batched`` as one batch after it, q queued behind that batch: all 202."""
    first = _create(http, h1)
    await asyncio.sleep(WAIT / 2)  # h1 in flight: these queue, and their waits end after h1's
    rest = [_create(http, payment_id) for payment_id in batched]
    answers = [await first]  # its wait ended: the batch starts (and waits for the hold)
    answers += [await _create(http, q)] + [await task for task in rest]
    assert [a.status_code for a in answers] == [202] * len(answers), [a.text for a in answers]
    return answers


async def _until(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)
    return found


async def _applied(db, payment_ids: list[str]) -> dict[str, int]:
    """payment id -> its outbox rows, for the payments that exist."""
    async with db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.id, (SELECT count(*) FROM outbox o WHERE o.organization_id = p.organization_id"
            " AND o.payment_id = p.id) AS events FROM payments p WHERE p.organization_id = $1 AND p.id = ANY($2)",
            ORG, payment_ids)
    return {r["id"]: r["events"] for r in rows}


async def test_a_202d_command_is_found_on_another_replica_and_applied_once(runtime, db, api):
    run = uuid.uuid4().hex[:8]
    h1, h2, h3, q = (f"d202-{run}-{name}" for name in ("h1", "h2", "h3", "q"))
    async with Hold(db, [h1, h2, h3]) as hold, _api_process(runtime.settings) as (_, http):
        answers = await _held_behind_a_batch(http, h1, [h2, h3], q)
        ids = dict(zip([h1, q, h2, h3], [a.json()["command_id"] for a in answers], strict=True))

        async def states() -> dict[str, str]:
            found = {}
            for payment_id, command_id in ids.items():
                status = await api.request("GET", f"/v1/commands/{command_id}", org=ORG)
                assert status.status_code == 200, status.text  # never 404 on another replica
                found[payment_id] = status.json()["status"]
            return found

        assert set((await states()).values()) <= {"running", "completed"}
        # q left the queue for its own workflow, at once: it does not wait for the batch.
        await _until(lambda: _completed(states, [q]), "q completed while the batch is held")
        assert (await states())[h2] == "running"
        # The batched ones' own workflows wait (delayed) for the batch to decide.
        for payment_id in (h2, h3):
            desc = await runtime.temporal.get_workflow_handle(workflow_id(ORG, ids[payment_id])).describe()
            assert desc.status == WorkflowExecutionStatus.RUNNING
            assert desc.execution_time - desc.start_time >= timedelta(seconds=30), "not delayed"
        await hold.release()
        await _until(lambda: _completed(states, list(ids)), "every command completed")

        async def woken() -> bool:  # by the batcher once the batch committed, not after the delay
            descs = [await runtime.temporal.get_workflow_handle(workflow_id(ORG, ids[p])).describe() for p in (h2, h3)]
            return all(d.status == WorkflowExecutionStatus.COMPLETED for d in descs)

        await _until(woken, "the batched commands' own workflows completed", timeout=20)
    assert await _applied(db, list(ids)) == {payment_id: 1 for payment_id in ids}  # exactly once

    async def batches() -> list[list[str]]:  # the dev server's visibility store lags a little
        found = [(await e.memo()).get("commands", []) async for e in runtime.temporal.list_workflows(
            "WorkflowType = 'CommandBatch'")]
        listed = {c for batch in found for c in batch}
        # h2 and h3 ran batched (their own workflows were delayed, asserted above), in
        # either order: their two requests race each other to the API.
        return found if {f"{ORG}/{ids[h2]}", f"{ORG}/{ids[h3]}"} <= listed else []

    ran = await _until(batches, "the batches of h2 and h3 listed", timeout=60)
    assert not any(f"{ORG}/{ids[q]}" in batch for batch in ran), "q ran in a batch too"


async def _completed(states, payment_ids: list[str]) -> bool:
    found = await states()
    return all(found[p] == "completed" for p in payment_ids)


async def test_a_202d_queued_command_survives_a_sigkill_of_its_api(runtime, db):
    run = uuid.uuid4().hex[:8]
    h1, h2, q = (f"d202-{run}-{name}" for name in ("h1", "h2", "q"))
    async with Hold(db, [h1, h2, q]) as hold:  # q too: it cannot complete before the kill
        async with _api_process(runtime.settings) as (process, http):
            answers = await _held_behind_a_batch(http, h1, [h2], q)
            process.send_signal(signal.SIGKILL)  # right after q's 202: q was queued in its memory
            process.wait(10)
        await hold.release()
    ids = dict(zip([h1, q, h2], [a.json()["command_id"] for a in answers], strict=True))
    # Applied by the session's worker (the killed API's workflow tasks time out and move).
    await _until(lambda: _everything_applied(db, list(ids)), "every 202'd command applied", timeout=90)
    for command_id in ids.values():
        state, value = await runtime.commands.status(ORG, command_id)
        assert state == CommandState.COMPLETED and value.payment.id in ids
    assert await _applied(db, list(ids)) == {payment_id: 1 for payment_id in ids}  # exactly once


async def _everything_applied(db, payment_ids: list[str]) -> bool:
    return len(await _applied(db, payment_ids)) == len(payment_ids)
