"""The projector process against the real stack: foreign producers, DLQ, SIGKILL, replay."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from tests.support.brokers import session_broker
from tests.support.builders import recount, snapshot
from tests.support.children import eventually, settings_env
from tests.support.read_side import payments_from_mongo, raw_event, read_topic, statistics_from_mongo


async def test_foreign_events_are_projected_and_invalid_ones_dead_lettered(qsettings, runtime, producer, projector):
    topic = qsettings.events_topic
    good1, good2 = raw_event("ext-1"), raw_event("ext-2", amount=99)
    wrong_type = raw_event("ext-3", type_="com.gyroscops.payment.teleported")
    missing = raw_event("ext-4")
    del missing["organizationid"]
    bad_currency = raw_event("ext-5", currency="XYZ")
    bad = [b"{this is not json", json.dumps(wrong_type).encode(), json.dumps(missing).encode(),
           json.dumps(bad_currency).encode()]
    await producer.send_and_wait(topic, json.dumps(good1).encode(), key=b"ext-1")
    for i, value in enumerate(bad):
        await producer.send_and_wait(topic, value, key=f"bad-{i}".encode(), headers=[("trace", b"t-1")])
    await producer.send_and_wait(topic, json.dumps(good2).encode(), key=b"ext-2")

    async def both_projected() -> bool:
        return all([await runtime.read_model.get("org-x", pid) for pid in ("ext-1", "ext-2")])

    await eventually(both_projected, what="good events around the bad ones")
    view = await runtime.read_model.get("org-x", "ext-2")
    assert (view.amount, view.currency, view.description) == (99, "EUR", "from elsewhere")

    dead = await read_topic(qsettings.kafka_bootstrap, qsettings.dlq_topic, 4)
    assert sorted(r.value for r in dead) == sorted(bad)  # the original bytes
    reasons = {r.value: dict(r.headers)["dlq-reason"].decode() for r in dead}
    assert "malformed JSON" in reasons[bad[0]]
    assert "unknown event type" in reasons[bad[1]]
    assert "organizationid" in reasons[bad[2]]
    assert "unknown currency" in reasons[bad[3]]
    assert all(dict(r.headers)["trace"] == b"t-1" and dict(r.headers)["dlq-source-topic"] == topic.encode()
               for r in dead)
    metrics = await projector.metrics()
    assert 'payments_projection_events_total{result="invalid",type="unknown"} 2.0' in metrics
    assert 'payments_projection_events_total{result="applied",type="created"} 2.0' in metrics


async def test_events_from_an_untrusted_source_are_dead_lettered_never_projected(qsettings, runtime, producer,
                                                                                   projector):
    # A producer that is not the command service writes straight to the events topic.
    forged = raw_event("forged-1", org="org-t") | {"source": "/billing/legacy"}
    trusted = raw_event("trusted-1", org="org-t")
    await producer.send_and_wait(qsettings.events_topic, json.dumps(forged).encode(), key=b"forged-1")
    await producer.send_and_wait(qsettings.events_topic, json.dumps(trusted).encode(), key=b"trusted-1")

    async def trusted_projected() -> bool:
        return await runtime.read_model.get("org-t", "trusted-1") is not None

    await eventually(trusted_projected, what="the trusted event, sent after the forged one")
    assert await runtime.read_model.get("org-t", "forged-1") is None
    dead = await read_topic(qsettings.kafka_bootstrap, qsettings.dlq_topic, 1)
    assert [r.value for r in dead] == [json.dumps(forged).encode()]
    assert dict(dead[0].headers)["dlq-reason"] == b"untrusted source"


async def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(qsettings, runtime, producer,
                                                                         projector_factory):
    payments = [snapshot(f"k{i}", f"org-{i % 3}", amount=100 + i, currency=("EUR", "JPY")[i % 2])
                for i in range(300)]
    for p in payments:  # created, completed, and a duplicate of the creation
        created = new_event(EventType.CREATED, p)
        done = new_event(EventType.STATUS_CHANGED, p.model_copy(update={"status": PaymentStatus.COMPLETED, "version": 2}))
        for event in (created, done, created):
            await producer.send(qsettings.events_topic, event.to_json_bytes(), key=event.subject.encode())
    await producer.flush()

    first = projector_factory("--batch-size", "10")
    first.start()

    async def some_projected() -> bool:
        return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) >= 60

    await eventually(some_projected, 60, "part of the stream")
    assert first.kill() == -9
    done_before = await (await runtime.read_model.active(fresh=True)).payments.count_documents({"status": "completed"})
    assert done_before < 300, "the projector finished before it was killed: the test proves nothing"

    second = projector_factory()
    second.start()

    async def all_completed() -> bool:
        cols = await runtime.read_model.active(fresh=True)
        return await cols.payments.count_documents({"status": "completed"}) == 300

    try:
        await eventually(all_completed, 60, "every payment completed after the restart")
    except AssertionError:
        raise AssertionError(second.logs()) from None
    stored = await payments_from_mongo(runtime)
    assert len(stored) == 300
    assert await statistics_from_mongo(runtime) == recount(stored)
    total = sum(b["count"] for b in (await statistics_from_mongo(runtime)).values())
    assert total == 300


async def test_replay_rebuilds_the_same_read_model_in_a_new_generation(qsettings, runtime, producer, projector):
    for i in range(20):
        p = snapshot(f"r{i}", "org-r", amount=10 * (i + 1))
        events = [new_event(EventType.CREATED, p)]
        if i % 4 == 0:
            events.append(new_event(EventType.DELETED, p.model_copy(update={"version": 2, "deleted_at": p.created_at})))
        for e in events:
            await producer.send(qsettings.events_topic, e.to_json_bytes(), key=e.subject.encode())
    await producer.flush()

    async def projected() -> bool:
        cols = await runtime.read_model.active(fresh=True)
        return await cols.tombstones.count_documents({}) == 5 and await cols.payments.count_documents({}) == 15

    await eventually(projected)
    before_gen = (await runtime.read_model.active(fresh=True)).generation
    stats_before = await statistics_from_mongo(runtime)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "replay", "--no-progress",
                         *(["--idle", "1"] if session_broker() == "tansu" else [])],  # Tansu's end offsets are wrong
        env=settings_env(qsettings), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "applied 25" in result.stdout
    after = await runtime.read_model.active(fresh=True)
    assert after.generation != before_gen
    assert await statistics_from_mongo(runtime) == stats_before
    assert await after.payments.count_documents({}) == 15
    assert before_gen not in {n.split("_", 1)[1] for n in await runtime.read_model.db.list_collection_names() if "_" in n}
