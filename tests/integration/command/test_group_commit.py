"""Group commit (issue 14) through Temporal and PostgreSQL: concurrent commands run as
``CommandBatch`` workflows and each caller still gets exactly its own outcome.

The session runtime has group commit on (the default); one command is kept in flight
while the others arrive, so that they queue and run as one batch.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from services.command import handlers as runtime_handlers
from services.command.commands import (
    CommandBatch,
    CommandState,
    CreatePayment,
    ModifyPayment,
    Rejected,
    Rejection,
    RejectionKind,
)
from shared.payment import PaymentAction, PaymentStatus

ORG = "org-gc"


def _create(payment_id: str, **fields) -> CreatePayment:
    return CreatePayment(**({"command_id": f"create-{payment_id}", "organization_id": ORG,
                             "payment_id": payment_id, "amount": 100, "currency": "EUR"} | fields))


def _modify(action: PaymentAction, payment_id: str, command_id: str, **fields) -> ModifyPayment:
    return ModifyPayment(command_id=command_id, organization_id=ORG, action=action, payment_id=payment_id, **fields)


async def _batches_with(runtime, command_ids: set[str]) -> list[list[str]]:
    """The memos (command lists) of the batch workflows that ran any of ``command_ids``."""
    wanted = {f"{ORG}/{c}" for c in command_ids}
    for _ in range(50):  # the dev server's visibility store lags a little
        found = []
        async for execution in runtime.temporal.list_workflows("WorkflowType = 'CommandBatch'"):
            commands = (await execution.memo()).get("commands", [])
            if wanted & set(commands):
                found.append(commands)
        if found:
            return found
        await asyncio.sleep(0.2)
    return []


async def test_batched_commands_get_their_own_outcomes_in_arrival_order(runtime, db):
    service = runtime.commands
    run = uuid.uuid4().hex[:8]
    existing = f"gc-{run}-existing"
    await service.process(_create(existing))
    blocker = asyncio.create_task(service.process(_create(f"gc-{run}-blocker")))
    await asyncio.sleep(0)  # the blocker is in flight: what follows queues, in this order
    queued = [
        _create(f"gc-{run}-a"),
        _modify(PaymentAction.UPDATE, f"gc-{run}-a", f"upd-{run}-a", expected_version=1, amount=250),
        _modify(PaymentAction.COMPLETE, f"gc-{run}-a", f"cpl-{run}-a", expected_version=2),
        _modify(PaymentAction.REFUND, existing, f"ref-{run}"),  # still processing: refused
        _create(f"gc-{run}-a", amount=7).model_copy(update={"command_id": f"again-{run}"}),  # id taken
        _create(f"gc-{run}-b"),
        _create(f"gc-{run}-b"),  # the same command twice: one payment, the same result
        _modify(PaymentAction.CANCEL, existing, f"cnl-{run}"),
    ]
    outcomes = await asyncio.gather(blocker, *[service.process(cmd) for cmd in queued], return_exceptions=True)
    _, created, updated, completed, refund, taken, b1, b2, cancelled = outcomes
    assert (created.payment.version, updated.payment.amount, completed.payment.status) == (
        1, 250, PaymentStatus.COMPLETED)
    assert isinstance(refund, Rejected) and refund.kind == RejectionKind.ILLEGAL_TRANSITION
    assert isinstance(taken, Rejected) and taken.kind == RejectionKind.CONFLICT
    assert b1.payment == b2.payment and cancelled.payment.status == PaymentStatus.CANCELLED
    assert all(o.consistency_token for o in (created, updated, completed, b1, cancelled))
    assert [r["payment_version"] for r in await db.outbox(f"gc-{run}-a")] == [1, 2, 3]
    assert [r["payment_version"] for r in await db.outbox(f"gc-{run}-b")] == [1]
    assert [r["payment_version"] for r in await db.outbox(existing)] == [1, 2]

    # The Temporal UI shows which commands the batch ran (its memo).
    [batch] = await _batches_with(runtime, {c.command_id for c in queued})
    assert batch == [f"{ORG}/{c.command_id}" for c in queued]
    # GET /v1/commands/{id} per command: accepted ones from their result rows, the refused
    # ones from the workflow they ran alone (as without group commit).
    state, value = await service.status(ORG, f"upd-{run}-a")
    assert state == CommandState.COMPLETED and value.payment.amount == 250 and value.consistency_token
    state, value = await service.status(ORG, f"ref-{run}")
    assert state == CommandState.FAILED and value.kind == RejectionKind.ILLEGAL_TRANSITION


async def test_concurrent_http_requests_each_get_their_own_answer(api, db, runtime):
    """Creates, blind and conditional modifications of one payment, a refused transition
    and one Idempotency-Key sent five times, all at once over HTTP."""
    run = uuid.uuid4().hex[:8]
    target = await api.created(org=ORG, amount=100)
    path = f"/v1/payments/{target['id']}"
    key = f"key-{run}"
    requests = [api.create(org=ORG, description=f"gc-{run}-{n}") for n in range(12)]
    requests += [api.request("PATCH", path, org=ORG, json={"description": "first"}),
                 api.request("PATCH", path, org=ORG, json={"metadata": {"second": True}}),
                 api.request("POST", f"{path}/refund", org=ORG)]  # processing: 409
    requests += [api.create(org=ORG, headers={"Idempotency-Key": key}, description=f"idem-{run}") for _ in range(5)]
    responses = await asyncio.gather(*requests)
    creates, (first, second, refund), keyed = responses[:12], responses[12:15], responses[15:]
    assert [r.status_code for r in creates] == [201] * 12, [r.text for r in creates]
    assert [r.json()["description"] for r in creates] == [f"gc-{run}-{n}" for n in range(12)]
    assert len({r.headers["command-id"] for r in creates}) == 12
    assert first.status_code == second.status_code == 200
    assert sorted([first.json()["version"], second.json()["version"]]) == [2, 3]
    assert refund.status_code == 409 and refund.json()["type"].endswith("/illegal-transition")
    assert {r.status_code for r in keyed} == {201} and len({r.json()["id"] for r in keyed}) == 1
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payments WHERE description = $1", f"idem-{run}") == 1
        row = await conn.fetchrow("SELECT description, metadata, version FROM payments WHERE id = $1", target["id"])
    assert (row["description"], row["metadata"], row["version"]) == ("first", {"second": True}, 3)
    assert [r["payment_version"] for r in await db.outbox(target["id"])] == [1, 2, 3]
    # Some of them did run together, and each batched create answers per command.
    batches = await _batches_with(runtime, {r.headers["command-id"] for r in creates})
    assert batches, "no request was group-committed"
    batched = next(c.split("/", 1)[1] for c in batches[0] if c.split("/", 1)[1].startswith("create-"))
    status = await api.request("GET", f"/v1/commands/{batched}", org=ORG)
    assert status.status_code == 200 and status.json()["status"] == "completed", status.text
    assert status.headers["consistency-token"]


@pytest.mark.parametrize("count", [40])
async def test_a_burst_commits_every_command_once(runtime, db, count):
    run = uuid.uuid4().hex[:8]
    commands = [_create(f"burst-{run}-{n}", metadata={"n": n}) for n in range(count)]
    results = await asyncio.gather(*[runtime.commands.process(c) for c in commands])
    assert [r.payment.metadata["n"] for r in results] == list(range(count))
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT payload FROM outbox WHERE payment_id LIKE $1", f"burst-{run}-%")
    assert sorted(json.loads(r["payload"])["subject"] for r in rows) == sorted(c.payment_id for c in commands)


async def test_a_batch_on_postgresql_does_exactly_what_its_items_do_alone(runtime):
    """The set-based path of a batch's independent creates (one statement per table for
    all of them) against real PostgreSQL: one organization runs the items as one batch,
    another runs the same items alone, in order; outcomes and rows must be the same.
    (The same property over random batches, on the in-memory store:
    tests/unit/test_group_commit_unit.py.)"""
    run = uuid.uuid4().hex[:8]
    store = runtime.store

    def items(org: str) -> tuple[list, list]:
        def create(command_id: str, payment_id: str, **fields) -> CreatePayment:
            return CreatePayment(**({"command_id": command_id, "organization_id": org, "payment_id": payment_id,
                                     "amount": 100, "currency": "EUR"} | fields))

        before = [create("c-pre", "p-taken"), create("c-done", "p-done")]
        batch = [
            create("c-1", "p-1"),  # independent: set-based
            create("c-2", "p-2", amount=0),  # refused by the rules
            create("c-3", "p-3", currency="XXX"),
            create("c-4", "p-taken"),  # the id is taken
            create("c-done", "p-done"),  # ran before: its first result
            create("c-10", "p-10", user_id="u-7", description="é ∑ \"quoted\"",
                   metadata={"k": "é", "n": "1"}),
            create("c-5", "p-5"),  # two on one payment: one by one
            ModifyPayment(command_id="c-6", organization_id=org, action=PaymentAction.UPDATE,
                          payment_id="p-5", amount=7),
            create("c-7", "p-7"), create("c-7", "p-7"),  # one command twice
        ]
        return before, batch

    async def alone(item):
        try:
            return await (runtime_handlers.create if isinstance(item, CreatePayment) else runtime_handlers.modify)(
                store, item, source="/t")
        except Rejected as rejected:
            return Rejection.of(rejected)

    org_batch, org_alone = f"gcb-{run}", f"gca-{run}"
    before, batch = items(org_batch)
    for item in before:
        await alone(item)
    got = (await runtime_handlers.run_batch(store, CommandBatch(batch_id=f"b-{run}", items=batch), source="/t")).items
    before, one_by_one = items(org_alone)
    for item in before:
        await alone(item)
    expected = [await alone(item) for item in one_by_one]

    def comparable(outcome):
        if isinstance(outcome, Rejection):
            return ("rejected", outcome.kind, outcome.detail.replace(org_alone, "ORG").replace(org_batch, "ORG"))
        p = outcome.payment
        return ("ok", outcome.command_id, p.id, p.user_id, p.amount, p.currency, p.status, p.description,
                p.metadata, p.version)

    assert [comparable(o) for o in got] == [comparable(o) for o in expected]
    assert [o[0] for o in map(comparable, got)] == [
        "ok", "rejected", "rejected", "rejected", "ok", "ok", "ok", "ok", "ok", "ok"]

    async def rows(org: str) -> tuple:
        async with runtime.pool.acquire() as conn:
            payments = await conn.fetch(
                "SELECT id, user_id, amount, currency, status, description, metadata, version FROM payments"
                " WHERE organization_id = $1 ORDER BY id", org)
            commands = await conn.fetch(
                "SELECT command_id, command_type, payment_id, result -> 'payment' ->> 'version' AS v FROM commands"
                " WHERE organization_id = $1 ORDER BY command_id", org)
            events = await conn.fetch(
                "SELECT payment_id, payment_version, event_type FROM outbox WHERE organization_id = $1"
                " ORDER BY payment_id, payment_version", org)
        return [tuple(r) for r in payments], [tuple(r) for r in commands], [tuple(r) for r in events]

    assert await rows(org_batch) == await rows(org_alone)
