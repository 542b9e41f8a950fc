"""PostgreSQL's event log as the source of every payment's history (issue 23), the whole
system running: the history of a payment through create, update, complete, refund and
delete, the same after a rebuild from either source; a rebuild from PostgreSQL after the
events topic was deleted and recreated empty; a rebuild while load and the projector
run; ``payments reconcile`` clean after each."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.settings import Settings
from tests.support.systems import IsolatedSystem, isolated_system


@pytest.fixture(scope="module")
async def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IsolatedSystem]:
    async with isolated_system(settings, "eventlog", tmp_path_factory.mktemp("eventlog-logs")) as running:
        yield running


def _auth(settings: Settings, org: str, subject: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=settings,
                                                    subject=subject)}


def cli(system: IsolatedSystem, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=system.env, capture_output=True,
                          text=True, timeout=300)


def reconcile(system: IsolatedSystem) -> dict[str, Any]:
    done = cli(system, "reconcile", "--json", "--grace-seconds", "0")
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def replay(system: IsolatedSystem, source: str) -> str:
    done = cli(system, "replay", "--from", source, "--no-progress", "--idle", "3")
    assert done.returncode == 0, done.stderr
    return done.stdout


async def a_life(system: IsolatedSystem, org: str) -> tuple[str, str]:
    """create, update, complete, refund one payment; create and delete another."""
    s = system.settings
    command, query = f"http://127.0.0.1:{s.command_api_port}", f"http://127.0.0.1:{s.query_api_port}"
    alice, bob = _auth(s, org, "alice"), _auth(s, org, "bob")
    async with httpx.AsyncClient(timeout=30) as http:
        paid = (await http.post(f"{command}/v1/payments", headers=alice,
                                json={"amount": 1000, "currency": "EUR"})).json()["id"]
        steps = [("patch", "", {"amount": 1500}, alice), ("post", "/complete", None, bob), ("post", "/refund", None, bob)]
        for method, path, body, who in steps:
            answer = await http.request(method.upper(), f"{command}/v1/payments/{paid}{path}", headers=who, json=body)
            assert answer.status_code == 200, answer.text
        gone = (await http.post(f"{command}/v1/payments", headers=alice, json={"amount": 5, "currency": "USD"})).json()
        assert (await http.delete(f"{command}/v1/payments/{gone['id']}", headers=bob)).status_code in (200, 204)
        for pid, version in ((paid, 4), (gone["id"], 2)):
            history = await http.get(f"{query}/v1/payments/{pid}/history", headers=alice)
            for _ in range(100):
                if history.status_code == 200 and len(history.json()["data"]) == version:
                    break
                await asyncio.sleep(0.2)
                history = await http.get(f"{query}/v1/payments/{pid}/history", headers=alice)
            assert len(history.json()["data"]) == version, history.text
    return paid, gone["id"]


async def history_of(system: IsolatedSystem, org: str, pid: str) -> list[dict]:
    s = system.settings
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"http://127.0.0.1:{s.query_api_port}/v1/payments/{pid}/history",
                                headers=_auth(s, org, "reader"))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


async def test_history_through_a_life_and_the_same_after_a_rebuild_from_either_source(system):
    org = f"org-life-{uuid.uuid4().hex[:6]}"
    paid, gone = await a_life(system, org)
    before = await history_of(system, org, paid)
    assert [(e["version"], e["event_type"], e["actor"]) for e in before] == [
        (1, "created", "alice"), (2, "updated", "alice"), (3, "status_changed", "bob"), (4, "refunded", "bob")]
    assert all(e["command_id"] for e in before)
    assert before[1]["changes"] == {"amount": {"old": 1000, "new": 1500}}
    assert before[2]["changes"] == {"status": {"old": "processing", "new": "completed"}}
    assert before[3]["changes"]["status"] == {"old": "completed", "new": "refunded"}
    assert before[3]["changes"]["amount_refunded"] == {"old": 0, "new": 1500}  # issue 24's field, as it came
    deleted = await history_of(system, org, gone)
    assert [e["event_type"] for e in deleted] == ["created", "deleted"] and deleted[1]["actor"] == "bob"
    for source in ("postgres", "kafka"):
        assert "from " + source in replay(system, source)
        assert await history_of(system, org, paid) == before
        assert await history_of(system, org, gone) == deleted
    assert reconcile(system)["drift"] == 0


async def test_a_rebuild_from_postgres_needs_no_event_on_the_topic(system):
    org = f"org-empty-{uuid.uuid4().hex[:6]}"
    paid, _ = await a_life(system, org)
    before = await history_of(system, org, paid)
    s = system.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([s.events_topic])
        for _ in range(50):
            if s.events_topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.2)
        await admin.create_topics([NewTopic(s.events_topic, s.events_topic_partitions, 1)])
    finally:
        await admin.close()
    # A consumer whose topic vanished waits for its metadata to age (5 min): an operator
    # recreating the topic restarts the projector.
    await asyncio.to_thread(system.running.stop, names=["projector"])
    await asyncio.to_thread(system.running.start, system.env, names=["projector"])
    assert "replayed 0 events" in replay(system, "kafka")  # what a rebuild from the topic would see now
    async with httpx.AsyncClient(timeout=30) as http:
        lost = await http.get(f"http://127.0.0.1:{s.query_api_port}/v1/payments/{paid}/history",
                              headers=_auth(s, org, "reader"))
    assert lost.status_code == 404
    replay(system, "postgres")
    assert await history_of(system, org, paid) == before
    report = reconcile(system)
    assert report["drift"] == 0, report


async def test_a_rebuild_from_postgres_under_load_loses_nothing(system):
    org = f"org-load-{uuid.uuid4().hex[:6]}"
    s = system.settings
    command = f"http://127.0.0.1:{s.command_api_port}"
    auth = _auth(s, org, "loader")
    created: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                answer = await http.post(f"{command}/v1/payments", headers=auth, json={"amount": 7, "currency": "EUR"})
                assert answer.status_code == 201, answer.text
                created.append(answer.json()["id"])
                done = await http.post(f"{command}/v1/payments/{created[-1]}/complete", headers=auth)
                assert done.status_code == 200, done.text

    loader = asyncio.create_task(load())
    await asyncio.sleep(1)
    await asyncio.to_thread(replay, system, "postgres")
    await asyncio.sleep(0.5)
    stop.set()
    await loader
    last = created[-1]
    async with httpx.AsyncClient(timeout=30) as http:  # the projector caught up with the last write
        answer = await http.get(f"http://127.0.0.1:{s.query_api_port}/v1/payments/{last}",
                                params={"min_version": 2}, headers=auth)
        assert answer.status_code == 200, answer.text
    assert len(created) > 3
    report = reconcile(system)
    assert report["drift"] == 0, report
    assert [e["version"] for e in await history_of(system, org, created[0])] == [1, 2]


async def test_reconcile_finds_history_gaps_and_altered_versions_and_repair_fills_them(system):
    from pymongo import AsyncMongoClient

    from services.query.adapters.read_model import MongoReadModel
    from shared.auth import cursor_key

    org = f"org-gaps-{uuid.uuid4().hex[:6]}"
    paid, _ = await a_life(system, org)
    before = await history_of(system, org, paid)
    s = system.settings
    mongo: AsyncMongoClient = AsyncMongoClient(s.mongo_url, tz_aware=True)
    try:
        cols = await MongoReadModel(mongo[s.mongo_db], cursor_key(s)).active(fresh=True)
        assert (await cols.history.delete_one({"organization_id": org, "payment_id": paid, "version": 2})).deleted_count
        await cols.history.update_one({"organization_id": org, "payment_id": paid, "version": 3},
                                      {"$set": {"actor": "mallory", "payment.amount": 1}})
        await cols.history.insert_one({"_id": "forged", "organization_id": org, "payment_id": paid, "version": 9})
    finally:
        await mongo.close()
    found = reconcile(system)
    assert (found["history_missing"], found["history_stale"], found["history_extra"]) == (
        [f"{paid}@2"], [f"{paid}@3"], [f"{paid}@9"]), found
    done = cli(system, "reconcile", "--json", "--grace-seconds", "0", "--repair", "--org", org)
    assert json.loads(done.stdout)["repaired_writes"] >= 3, done.stdout
    assert reconcile(system)["drift"] == 0
    assert await history_of(system, org, paid) == before
