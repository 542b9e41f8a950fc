"""Kafka producers of commands and reconciliation, end to end: foreign clients
(confluent-kafka and Debian's kcat, both librdkafka) write commands and read results and
events, real ``payments`` processes (intake, relay, projector, both APIs) run them on the
session's broker (Apache Kafka in CI); ``payments reconcile`` compares the two sides.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pymongo import AsyncMongoClient

from devstack.system import RunningSystem
from services.query.adapters.read_model import MongoReadModel
from shared.auth import SCOPE_READ, SCOPE_WRITE, cursor_key, mint_token
from shared.events import parse_event
from shared.settings import Settings
from tests.support.systems import isolated_system

PROCESSES = ["intake", "relay", "projector", "query-api", "command-api"]
PREFIX = "com.gyroscops.payment.command."


class IntakeSystem:
    def __init__(self, settings: Settings, running: RunningSystem, env: dict[str, str], database_url: str) -> None:
        self.settings, self.running, self.env, self.database_url = settings, running, env, database_url

    def send(self, *messages: tuple[str | None, bytes]) -> None:
        """Produce ``(key, value)`` records with librdkafka, as a billing system would."""
        producer = Producer({"bootstrap.servers": self.settings.kafka_bootstrap, "acks": "all",
                             "enable.idempotence": False})
        for key, value in messages:
            producer.produce(self.settings.commands_topic, key=key, value=value,
                             headers=[("content-type", b"application/cloudevents+json")])
        assert producer.flush(15) == 0, "records left undelivered"

    def read(self, topic: str, done: Callable[[list[Message]], bool], timeout: float = 60.0) -> list[Message]:
        """Read ``topic`` from the beginning (all partitions, no group) until ``done``."""
        consumer = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False})
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            seen: list[Message] = []
            deadline = time.monotonic() + timeout
            while not done(seen):
                assert time.monotonic() < deadline, f"timed out on {topic}: {len(seen)} records"
                message = consumer.poll(0.3)
                if message is not None and message.error() is None:
                    seen.append(message)
            return seen
        finally:
            consumer.close()

    def results(self, command_ids: set[str], timeout: float = 60.0, *,
                twice: frozenset[str] = frozenset()) -> dict[str, list[dict[str, Any]]]:
        """Every result for ``command_ids`` (a command may have several after a crash or a
        re-send), once each has one and each of ``twice`` has two."""
        def covered(seen: list[Message]) -> bool:
            ids = [json.loads(m.value())["commandid"] for m in seen]
            return command_ids <= set(ids) and all(ids.count(cid) >= 2 for cid in twice)

        found: dict[str, list[dict[str, Any]]] = {}
        for message in self.read(self.settings.command_results_topic, covered, timeout):
            event = json.loads(message.value())
            found.setdefault(event["commandid"], []).append(event)
        return {cid: found[cid] for cid in command_ids}

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def auth(self, org: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=self.settings)}


def command(kind: str, org: str, subject: str | None, data: dict[str, Any] | None = None,
            command_id: str | None = None) -> tuple[str, dict[str, Any]]:
    cid = command_id or f"{kind}-{uuid.uuid4().hex[:12]}"
    value = {"specversion": "1.0", "id": cid, "source": "/billing/invoicing", "type": PREFIX + kind,
             "organizationid": org, "datacontenttype": "application/json", "data": data or {}}
    if subject is not None:
        value["subject"] = subject
    return cid, value


def record(value: dict[str, Any], key: str | None) -> tuple[str | None, bytes]:
    return key, json.dumps(value).encode()


@pytest.fixture(scope="module")
async def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IntakeSystem]:
    async with isolated_system(settings, "intake", tmp_path_factory.mktemp("intake-logs"), names=PROCESSES) as running:
        yield IntakeSystem(running.settings, running.running, running.env, running.database_url)


async def test_create_then_complete_from_kafka_is_visible_through_the_query_api(system: IntakeSystem) -> None:
    pid = f"inv-{uuid.uuid4().hex[:8]}"
    created_id, create = command("create", "org-k", pid, {"amount": 4200, "currency": "EUR", "user_id": "u-7"})
    completed_id, complete = command("complete", "org-k", pid)
    await asyncio.to_thread(system.send, record(create, pid), record(complete, pid))

    results = await asyncio.to_thread(system.results, {created_id, completed_id})
    assert [(r["type"], r["subject"], r["data"]["version"]) for r in results[created_id]] == [
        (PREFIX + "succeeded", pid, 1)]
    assert [(r["data"]["status"], r["data"]["version"]) for r in results[completed_id]] == [("completed", 2)]

    query = f"http://127.0.0.1:{system.settings.query_api_port}"
    command_api = f"http://127.0.0.1:{system.settings.command_api_port}"
    async with httpx.AsyncClient(timeout=30) as http:
        read = await http.get(f"{query}/v1/payments/{pid}", params={"min_version": 2}, headers=system.auth("org-k"))
        assert read.status_code == 200, read.text
        assert (read.json()["status"], read.json()["amount"]) == ("completed", 4200)
        # The result's consistency token makes a search read that write (read-your-writes).
        token = results[completed_id][0]["consistencytoken"]
        found = await http.get(f"{query}/v1/payments", params={"consistent_with": token, "status": "completed"},
                               headers=system.auth("org-k"))
        assert found.status_code == 200 and pid in [p["id"] for p in found.json()["data"]], found.text
        # The command status endpoint knows intake commands, for their organization only.
        status = await http.get(f"{command_api}/v1/commands/{completed_id}", headers=system.auth("org-k"))
        assert status.status_code == 200, status.text
        assert (status.json()["status"], status.json()["result"]["status"]) == ("completed", "completed")
        other = await http.get(f"{command_api}/v1/commands/{completed_id}", headers=system.auth("org-other"))
        assert other.status_code == 404
    # The events name the producer's source as their actor, and the command that caused each.
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        rows = await conn.fetch("SELECT payload FROM outbox WHERE organization_id = 'org-k' AND payment_id = $1 "
                                "ORDER BY payment_version", pid)
    finally:
        await conn.close()
    events = [parse_event(bytes(row["payload"])) for row in rows]
    assert [(e.actor, e.commandid) for e in events] == [("/billing/invoicing", created_id),
                                                         ("/billing/invoicing", completed_id)]


async def test_duplicates_run_once_bad_input_is_answered_or_dead_lettered(system: IntakeSystem) -> None:
    org = "org-d"
    twice_id, twice = command("create", org, None, {"amount": 100, "currency": "JPY"})
    invalid_id, invalid = command("create", org, "bad-1", {"amount": -3, "currency": "EUR"})
    missing_id, missing = command("refund", org, "no-such-payment")
    malformed = b'{"specversion": "1.0", "type": "com.gyroscops.payment.command.create"'  # cut short
    unknown_org = json.dumps({k: v for k, v in command("create", org, "x")[1].items() if k != "organizationid"})
    after_id, after = command("create", org, "after-1", {"amount": 1, "currency": "EUR"})
    await asyncio.to_thread(
        system.send, record(twice, "k1"), record(twice, "k1"), record(invalid, "bad-1"),
        (None, malformed), ("x", unknown_org.encode()), record(missing, "no-such-payment"), record(after, "after-1"))

    results = await asyncio.to_thread(system.results, {twice_id, invalid_id, missing_id, after_id},
                                      twice=frozenset({twice_id}))
    assert {r["data"]["id"] for r in results[twice_id]} == {results[twice_id][0]["subject"]}
    assert [r["type"] for r in results[twice_id]] == [PREFIX + "succeeded"] * 2
    problem = results[invalid_id][0]["data"]
    assert (results[invalid_id][0]["type"], problem["status"]) == (PREFIX + "rejected", 422)
    assert "amount" in problem["detail"]
    assert results[missing_id][0]["data"]["status"] == 404
    assert results[after_id][0]["data"]["version"] == 1  # the intake kept going

    rows = await system.fetch("SELECT id FROM payments WHERE organization_id = $1 ORDER BY id", org)
    assert sorted(r["id"] for r in rows) == sorted(["after-1", results[twice_id][0]["subject"]])

    dead = await asyncio.to_thread(system.read, system.settings.commands_dlq_topic, lambda seen: len(seen) >= 2)
    reasons = {m.value(): dict(m.headers())["dlq-reason"].decode() for m in dead}
    assert "malformed JSON" in reasons[malformed]
    assert "organizationid" in reasons[unknown_org.encode()]
    assert all(dict(m.headers())["dlq-source-topic"] == system.settings.commands_topic.encode() for m in dead)


async def test_sigkill_mid_stream_loses_no_command_and_applies_none_twice(system: IntakeSystem) -> None:
    org, n = "org-kill", 150
    sent = [command("create", org, f"kill-{i}", {"amount": 10 + i, "currency": "EUR"}) for i in range(n)]
    await asyncio.to_thread(system.send, *(record(value, value["subject"]) for _, value in sent))

    async def some_done() -> None:
        while not await system.fetch("SELECT 1 FROM payments WHERE organization_id = $1 LIMIT 1", org):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(some_done(), 60)
    child = system.running.children["intake"]
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    done = await system.fetch("SELECT count(*) AS n FROM payments WHERE organization_id = $1", org)
    assert done[0]["n"] < n, "the intake finished before the kill: the test proves nothing"
    await asyncio.to_thread(system.running.start, system.env, timeout=90, names=["intake"])

    results = await asyncio.to_thread(system.results, {cid for cid, _ in sent}, 120)
    assert all(r["type"] == PREFIX + "succeeded" and r["data"]["version"] == 1
               for rs in results.values() for r in rs)
    rows = await system.fetch(
        "SELECT p.id, p.version, (SELECT count(*) FROM outbox o WHERE o.payment_id = p.id) AS events"
        " FROM payments p WHERE p.organization_id = $1", org)
    assert len(rows) == n
    assert {(r["version"], r["events"]) for r in rows} == {(1, 1)}


def kcat(*args: str, stdin: str | None = None) -> list[str]:
    """Debian's kcat (librdkafka 2.0, C): the output lines of ``kcat ARGS``."""
    binary = shutil.which("kcat") or shutil.which("kafkacat")
    if binary is None:
        pytest.skip("kcat is not installed (Debian: apt-get install kcat; .ci/run fetches it)")
    done = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.strip()]


async def test_foreign_clients_send_commands_and_read_results_and_events(system: IntakeSystem) -> None:
    """kcat and confluent-kafka (both librdkafka) as another system would use them: each
    sends a create to the commands topic; both read its result and its payment event."""
    org, s = "org-foreign", system.settings
    by_kcat, by_librdkafka = f"kcat-{uuid.uuid4().hex[:8]}", f"rdkafka-{uuid.uuid4().hex[:8]}"
    kcat_id, kcat_create = command("create", org, by_kcat, {"amount": 700, "currency": "EUR"})
    rdkafka_id, rdkafka_create = command("create", org, by_librdkafka, {"amount": 800, "currency": "EUR"})
    await asyncio.to_thread(kcat, "-b", s.kafka_bootstrap, "-P", "-t", s.commands_topic, "-k", by_kcat,
                            "-H", "content-type=application/cloudevents+json", stdin=json.dumps(kcat_create))
    await asyncio.to_thread(system.send, record(rdkafka_create, by_librdkafka))

    results = await asyncio.to_thread(system.results, {kcat_id, rdkafka_id})
    assert {cid: [r["type"] for r in rs] for cid, rs in results.items()} == {
        kcat_id: [PREFIX + "succeeded"], rdkafka_id: [PREFIX + "succeeded"]}
    seen = [json.loads(line) for line in await asyncio.to_thread(
        kcat, "-b", s.kafka_bootstrap, "-C", "-t", s.command_results_topic, "-o", "beginning", "-e", "-q", "-f", "%s\n")]
    assert {kcat_id, rdkafka_id} <= {r["commandid"] for r in seen}

    subjects = {by_kcat, by_librdkafka}
    events = await asyncio.to_thread(system.read, s.events_topic,
                                     lambda seen: subjects <= {json.loads(m.value())["subject"] for m in seen})
    assert {json.loads(m.value())["type"] for m in events if json.loads(m.value())["subject"] in subjects} == {
        "com.gyroscops.payment.created"}
    deadline = time.monotonic() + 30
    while True:
        read = [json.loads(line) for line in await asyncio.to_thread(
            kcat, "-b", s.kafka_bootstrap, "-C", "-t", s.events_topic, "-o", "beginning", "-e", "-q", "-f", "%s\n")]
        if subjects <= {e["subject"] for e in read} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert subjects <= {e["subject"] for e in read}, "kcat did not read the payment events"


def reconcile(system: IntakeSystem, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "services.cli", "reconcile", "--json", "--grace-seconds", "0",
                           *args], env=system.env, capture_output=True, text=True, timeout=120)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


async def test_reconcile_finds_and_repairs_read_side_drift(system: IntakeSystem) -> None:
    org = "org-rec"
    commands = [command("create", org, f"rec-{i}", {"amount": 100 * (i + 1), "currency": "EUR"}) for i in range(3)]
    done_id, done = command("complete", org, "rec-2")
    refund_id, refund = command("refund", org, "rec-2", {"amount": 120, "reason": "partly returned"})
    sent = [*commands, (done_id, done), (refund_id, refund)]
    await asyncio.to_thread(system.send, *(record(v, v["subject"]) for _, v in sent))
    await asyncio.to_thread(system.results, {cid for cid, _ in sent})
    query = f"http://127.0.0.1:{system.settings.query_api_port}"
    async with httpx.AsyncClient(timeout=30) as http:
        for pid, version in (("rec-0", 1), ("rec-1", 1), ("rec-2", 3)):
            read = await http.get(f"{query}/v1/payments/{pid}", params={"min_version": version},
                                  headers=system.auth(org))
            assert read.status_code == 200, read.text
        assert (read.json()["status"], read.json()["amount_refunded"]) == ("partially_refunded", 120)
        stats = (await http.get(f"{query}/v1/statistics", headers=system.auth(org))).json()
        assert (stats["currencies"][0]["refunded"], stats["currencies"][0]["net"]) == (120, 600 - 120)

    code, clean = await asyncio.to_thread(reconcile, system, "--org", org)
    assert (code, clean["drift"]) == (0, 0), clean

    mongo: AsyncMongoClient = AsyncMongoClient(system.settings.mongo_url, tz_aware=True)
    try:
        cols = await MongoReadModel(mongo[system.settings.mongo_db], cursor_key(system.settings)).active(fresh=True)
        assert (await cols.payments.delete_one({"organization_id": org, "id": "rec-0"})).deleted_count == 1
        altered = await cols.statistics.find_one_and_update(
            {"organization_id": org, "status": "partially_refunded"}, {"$inc": {"sum": 1, "refunded": 1}})
        assert altered is not None

        code, found = await asyncio.to_thread(reconcile, system, "--org", org)
        assert code == 1
        assert (found["missing"], found["extra"], found["stale"]) == (["rec-0"], [], [])
        assert [(b["status"], b["actual"]["sum"] - b["expected"]["sum"], b["actual"]["refunded"] - b["expected"][
            "refunded"]) for b in found["buckets"]] == [("partially_refunded", 1, 1)]

        code, repaired = await asyncio.to_thread(reconcile, system, "--org", org, "--repair")
        assert code == 1 and repaired["repaired_writes"] >= 2
        code, after = await asyncio.to_thread(reconcile, system, "--org", org)
        assert (code, after["drift"]) == (0, 0), after
        assert (await cols.payments.find_one({"organization_id": org, "id": "rec-0"}))["amount"] == 100
    finally:
        await mongo.close()
