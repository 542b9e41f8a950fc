"""Poison events against the real stack: a foreign producer's unstorable event, a bug-like
failure on one event, a projector that cannot progress, cache bumps across a crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass, field

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from services.query.adapters import batch_writes
from services.query.adapters.cache import epoch_key
from services.query.adapters.read_model import META
from services.query.bootstrap import projection, query_runtime
from shared.dlq import dlq_headers
from shared.net import free_port
from shared.ops import ops_app
from tests.support.builders import recount
from tests.support.children import eventually, settings_env
from tests.support.read_side import payments_from_mongo, raw_event, read_topic, statistics_from_mongo

PARTITIONS = 3


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)


def foreign_produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list:
    """Produce with librdkafka (confluent-kafka): not our client, not aiokafka."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    delivered: list = []
    for key, value in records:
        producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(30)
    assert all(err is None for err, _ in delivered), delivered
    return [msg.partition() for _, msg in delivered]


async def test_a_foreign_poison_event_is_dead_lettered_and_every_other_event_projected(
        qsettings, runtime, projector_factory):
    await asyncio.to_thread(create_topic, qsettings.kafka_bootstrap, qsettings.events_topic)
    poison_v1 = raw_event("pz", "org-p", amount=500)
    poison_v1["data"]["payment"]["metadata"] = {"big": 10**29}  # the payload
    raw_poison = json.dumps(poison_v1).encode()
    ordinary = [raw_event(f"o{i}", "org-p", amount=100 + i) for i in range(30)]
    good_v2 = raw_event("pz", "org-p", version=2, amount=700, type_="com.gyroscops.payment.updated")
    records = [(b"pz", raw_poison)] + [(e["subject"].encode(), json.dumps(e).encode()) for e in ordinary]
    partitions = await asyncio.to_thread(foreign_produce, qsettings.kafka_bootstrap, qsettings.events_topic, records)
    assert len(set(partitions)) == PARTITIONS, "the ordinary events must cover every partition"
    process = projector_factory()
    process.start()

    async def ordinary_projected() -> bool:
        cols = await runtime.read_model.active(fresh=True)
        return await cols.payments.count_documents({"organization_id": "org-p", "id": {"$regex": "^o"}}) == 30

    await eventually(ordinary_projected, 60, "every ordinary event")
    [dead] = await read_topic(qsettings.kafka_bootstrap, qsettings.dlq_topic, 1)
    headers = dict(dead.headers)
    assert dead.value == raw_poison and headers["dlq-kind"] == b"invalid"
    assert b"signed 64 bits" in headers["dlq-reason"]
    assert await runtime.read_model.get("org-p", "pz") is None

    await asyncio.to_thread(foreign_produce, qsettings.kafka_bootstrap, qsettings.events_topic,
                            [(b"pz", json.dumps(good_v2).encode())])

    async def superseded() -> bool:
        view = await runtime.read_model.get("org-p", "pz")
        return view is not None and view.amount == 700

    await eventually(superseded, 30, "the later good version of the poison payment")
    stored = await payments_from_mongo(runtime)
    assert await statistics_from_mongo(runtime) == recount(stored)
    metrics = await process.metrics()
    assert 'payments_projection_dead_letters_total{reason="invalid"} 1.0' in metrics
    assert "payments_projector_stalled 0.0" in metrics
    await process.ready()  # still ready: it progresses


@dataclass
class Message:
    """What the projector reads of a Kafka record (aiokafka ConsumerRecord)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list = field(default_factory=list)


@pytest.fixture
def dead_letters():
    records: list[tuple[bytes | None, bytes, list]] = []

    async def dead_letter(key, value, headers):  # noqa: ANN001
        records.append((key, value, headers))

    dead_letter.records = records
    return dead_letter


def _messages(topic: str, events: list[dict]) -> list[Message]:
    return [Message(topic, i % PARTITIONS, i, e["subject"].encode(), json.dumps(e).encode())
            for i, e in enumerate(events)]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_bug_on_one_event_dead_letters_it_and_projection_continues(qsettings, runtime, dead_letters,
                                                                         monkeypatch):
    real_document = batch_writes.payment_document

    def buggy(event, projected_at):  # noqa: ANN001, ANN202 - a bug that only one input triggers
        if event.subject == "bug-1":
            raise KeyError("a bug in our code")
        return real_document(event, projected_at)

    monkeypatch.setattr(batch_writes, "payment_document", buggy)
    events = [raw_event(f"b{i}", "org-b", amount=10 + i) for i in range(40)]
    events.insert(17, raw_event("bug-1", "org-b"))
    before = _sample("payments_projection_dead_letters_total", reason="error")
    projector = projection(runtime, dead_letters, "g-test")
    await projector.handle(_messages(qsettings.events_topic, events))

    cols = await runtime.read_model.active(fresh=True)
    assert await cols.payments.count_documents({}) == 40
    [(key, value, headers)] = dead_letters.records
    headers = dict(headers)
    assert key == b"bug-1" and json.loads(value)["subject"] == "bug-1"
    assert headers["dlq-kind"] == b"error" and b"KeyError" in headers["dlq-reason"]
    assert headers["dlq-source-offset"] == b"17"
    assert _sample("payments_projection_dead_letters_total", reason="error") == before + 1
    await projector.health.check()  # ready: it progressed
    assert await statistics_from_mongo(runtime) == recount(await payments_from_mongo(runtime))


async def test_a_projector_that_cannot_progress_says_so(qsettings, dead_letters):
    unreachable = qsettings.model_copy(update={
        "mongo_url": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"})
    async with query_runtime(unreachable) as dead:
        await _stalls(qsettings, dead, dead_letters)
    assert dead_letters.records == []  # an unreachable MongoDB is nobody's poison


async def _stalls(qsettings, dead, dead_letters) -> None:  # noqa: ANN001
    projector = projection(dead, dead_letters, "g-stall")
    projector.health.stall_after = 0.5
    task = asyncio.create_task(projector.handle(_messages(qsettings.events_topic, [raw_event("s1")])))

    async def not_ready() -> str | None:
        try:
            await projector.health.check()
        except RuntimeError as exc:
            return str(exc)
        return None

    try:
        reason = await eventually(not_ready, 20, "the projector to report itself stalled")
        assert "stalled" in reason and "ServerSelectionTimeoutError" in reason
        ops = ops_app("projector", {"projection": projector.health.check})  # what the projector serves
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ops), base_url="http://ops") as client:
            readyz = await client.get("/readyz")
        assert readyz.status_code == 503 and "stalled" in readyz.json()["checks"]["projection"]
        assert _sample("payments_projector_stalled") == 1.0
        assert _sample("payments_projector_consecutive_failures") >= 1
        assert not task.done(), "the consuming loop must keep retrying, not die"
    finally:
        projector.stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def test_cache_bumps_survive_a_projector_crash_while_redis_is_down(qsettings, runtime, dead_letters, api, auth):
    search = "/v1/payments?limit=50"
    first = await api.get(search, headers=auth("org-c"))
    assert first.status_code == 200 and first.json()["data"] == []  # cached now
    async with query_runtime(qsettings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})) \
            as redis_down:
        crashed = projection(redis_down, dead_letters, "g-bump")
        await crashed.handle(_messages(qsettings.events_topic, [raw_event("c1", "org-c")]))
        assert crashed.pending_bumps == {"org-c"}, "Redis was down: the bump must still be pending"
    del crashed  # SIGKILL: its memory is gone
    stale = await api.get(search, headers=auth("org-c"))
    assert stale.json()["data"] == [], "the test needs a cached answer older than the read model"

    restarted = projection(runtime, dead_letters, "g-bump")
    await restarted.flush_bumps()  # its 1 s timer, before any event arrives
    fresh = await api.get(search, headers=auth("org-c"))
    assert [p["id"] for p in fresh.json()["data"]] == ["c1"]
    assert int(await runtime.cache.redis.get(epoch_key(runtime.cache.prefix, "org-c"))) >= 1
    assert await restarted.store.pending.load() == set()
    left = await runtime.read_model.db[META].count_documents(
        {"_id": {"$regex": "^pending-bumps:g-bump:"}, "orgs": {"$ne": []}})
    assert left == 0, "the crashed projector's record must be taken over, then cleared"


def _cli(qsettings, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "services.cli", "dlq", *args], env=settings_env(qsettings),
                          capture_output=True, text=True, timeout=120, check=False)


async def test_redrive_survives_a_projector_sigkill_and_does_not_loop(qsettings, runtime, producer, projector_factory):
    for topic in (qsettings.events_topic, qsettings.dlq_topic):
        await asyncio.to_thread(create_topic, qsettings.kafka_bootstrap, topic)
    # What a buggy projector version dead-lettered: 60 payments (created, completed), and one non-event.
    dead = []
    for i in range(60):
        created = raw_event(f"d{i}", f"org-{i % 3}", amount=10 + i)
        done = raw_event(f"d{i}", f"org-{i % 3}", version=2, amount=10 + i, status="completed",
                         type_="com.gyroscops.payment.status_changed")
        dead += [created, done]
    values = [json.dumps(e).encode() for e in dead] + [b"{not an event"]
    for offset, value in enumerate(values):
        key = json.loads(value)["subject"].encode() if value.startswith(b"{\"") else b"junk"
        headers = dlq_headers("error: KeyError: a fixed bug", qsettings.events_topic, 0, offset, "payments-projector",
                              [("trace", b"t-9")], kind="error")
        await producer.send_and_wait(qsettings.dlq_topic, value, key=key, headers=headers)

    listed = await asyncio.to_thread(_cli, qsettings, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 121 and {r["kind"] for r in rows} == {"error"}
    assert rows[0]["event_id"] == dead[0]["id"] and rows[0]["payment_id"] == "d0" and rows[0]["source_offset"] == 0
    shown = json.loads((await asyncio.to_thread(_cli, qsettings, "show", dead[5]["id"])).stdout)
    assert json.loads(shown[0]["value"]) == dead[5] and shown[0]["headers"]["trace"] == "t-9"

    first = projector_factory("--batch-size", "5")
    first.start()
    redriven = await asyncio.to_thread(_cli, qsettings, "redrive", "--all")
    assert redriven.returncode == 0 and "redrove 121" in redriven.stdout, redriven.stdout + redriven.stderr

    async def some_projected() -> bool:
        return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) >= 10

    await eventually(some_projected, 60, "part of the redrive projected")
    assert first.kill() == -9
    cols = await runtime.read_model.active(fresh=True)
    assert await cols.payments.count_documents({"status": "completed"}) < 60, (
        "the projector finished the redrive before it was killed: the test proves nothing")
    second = projector_factory()
    second.start()

    async def all_completed() -> bool:
        cols = await runtime.read_model.active(fresh=True)
        return await cols.payments.count_documents({"status": "completed"}) == 60

    await eventually(all_completed, 60, "every redriven payment after the restart")
    stored = await payments_from_mongo(runtime)
    assert len(stored) == 60 and await statistics_from_mongo(runtime) == recount(stored)
    back = await read_topic(qsettings.kafka_bootstrap, qsettings.dlq_topic, 122)
    returned = [r for r in back if dict(r.headers).get("dlq-redrive-count") is not None]
    # The one that still fails comes back, with its redrive count: once, or twice when the
    # SIGKILL fell between its DLQ write and its batch's offset commit (at-least-once).
    assert {r.value for r in returned} == {b"{not an event"} and len(returned) <= 2, returned
    assert {dict(r.headers)["dlq-redrive-count"] for r in returned} == {b"1"}  # never redriven again: no loop
    assert dict(returned[0].headers)["dlq-kind"] == b"invalid" and dict(returned[0].headers)["trace"] == b"t-9"

    again = await asyncio.to_thread(_cli, qsettings, "redrive", "--all")
    assert "skipped 1" in again.stdout and "redrove 120" in again.stdout, again.stdout + again.stderr
