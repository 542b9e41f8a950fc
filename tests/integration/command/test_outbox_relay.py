"""Transactional outbox -> Kafka: content, per-payment order, crash of the relay,
broker outage, retention."""

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

import pytest

from services.command import handlers
from services.command.commands import CreatePayment
from services.command.config import CommandSettings
from services.command.entrypoints.relay import OutboxRelay
from shared.events import CONTENT_TYPE, EventType
from shared.kafka import TopicError
from shared.net import free_port
from shared.payment import PaymentSnapshot
from shared.settings import Settings
from shared.telemetry import OUTBOX_BACKLOG, OUTBOX_PUBLISH_LAG
from tests.support.brokers import keeping_broker, private_kafka


@contextlib.asynccontextmanager
async def running_relay(pool, settings: CommandSettings) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(pool, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def unpublished(db, payment_ids: list[str] | None = None) -> int:
    async with db.pool.acquire() as conn:
        if payment_ids is None:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND payment_id = ANY($1)", payment_ids)


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def event_ids(db, payment_ids: list[str]) -> set[str]:
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM outbox WHERE payment_id = ANY($1)", payment_ids)
    return {str(r["event_id"]) for r in rows}


async def bulk_payments(runtime, count: int, org: str = "org-bulk") -> list[str]:
    """Write ``count`` payments through the service layer (fast; same transaction code)."""
    ids = []
    for _ in range(count):
        payment_id = f"bulk-{uuid.uuid4().hex[:12]}"
        cmd = CreatePayment(command_id=f"create-{payment_id}", organization_id=org, payment_id=payment_id,
                            amount=100, currency="EUR")
        await handlers.create(runtime.store, cmd, source=runtime.settings.event_source)
        ids.append(payment_id)
    return ids


async def test_events_reach_kafka_keyed_typed_and_in_order(api, db, runtime, consume):
    settings = runtime.settings
    async with running_relay(runtime.pool, settings):
        a = await api.created(amount=100)
        b = await api.created(amount=200, currency="JPY")
        path = f"/v1/payments/{a['id']}"
        expected: dict[str, list[dict]] = {a["id"]: [a], b["id"]: [b]}
        update = await api.request("PATCH", path, headers={"If-Match": "1", **api.auth("org-a", subject="user-7")},
                                   json={"amount": 150})
        for response in [
            update,
            await api.request("POST", f"{path}/complete"),
            await api.request("POST", f"/v1/payments/{b['id']}/cancel"),
            await api.request("POST", f"{path}/refund"),
            await api.request("DELETE", f"/v1/payments/{b['id']}"),
        ]:
            assert response.status_code == 200, response.text
            expected[response.json()["id"]].append(response.json())
        wanted = await event_ids(db, list(expected))
        assert len(wanted) == 7
        records = await consume(settings.kafka_bootstrap, settings.events_topic, wanted)
        await wait_until(lambda: _zero(unpublished(db, list(expected))), what="rows marked published")

    ours = [(key, event, headers) for key, event, headers in records if event.id in wanted]
    for payment_id, snapshots in expected.items():
        stream = [(key, event, headers) for key, event, headers in ours if event.subject == payment_id]
        firsts = list({event.id: (key, event, headers) for key, event, headers in stream}.values())
        assert [e.paymentversion for _, e, _ in firsts] == [s["version"] for s in snapshots]
        for (key, event, headers), snapshot in zip(firsts, snapshots, strict=True):
            assert key == payment_id.encode()
            assert headers["content-type"] == CONTENT_TYPE.encode()
            assert event.payment == PaymentSnapshot.model_validate(
                {k: v for k, v in snapshot.items() if k != "formatted_amount"})  # HTTP representation only
            assert event.source == settings.event_source and event.organizationid == "org-a"
    # Who did it: the token's sub, or its organization when it names none; and which command.
    of_a = {e.paymentversion: e for _, e, _ in ours if e.subject == a["id"]}
    assert [of_a[v].actor for v in sorted(of_a)] == ["org:org-a", "user-7", "org:org-a", "org:org-a"]
    assert of_a[2].commandid == update.headers["Command-Id"]
    assert all(e.commandid for _, e, _ in ours)
    types_a = [e.type for k, e, _ in ours if e.subject == a["id"]]
    assert types_a == [EventType.CREATED, EventType.UPDATED, EventType.STATUS_CHANGED, EventType.REFUNDED]
    assert [e.type for k, e, _ in ours if e.subject == b["id"]][-1] == EventType.DELETED
    assert OUTBOX_BACKLOG._value.get() == 0 and OUTBOX_PUBLISH_LAG._value.get() == 0


async def _false(value: bool) -> bool:
    return not value


async def _zero(awaitable) -> bool:
    return await awaitable == 0



def _relay_process(settings: CommandSettings, batch_size: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PAYMENTS_DATABASE_URL": settings.database_url,
        "PAYMENTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PAYMENTS_EVENTS_TOPIC": settings.events_topic,
        "PAYMENTS_RELAY_BATCH_SIZE": str(batch_size),
        "PAYMENTS_RELAY_METRICS_PORT": str(free_port()),
        "PAYMENTS_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.cli", "relay"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_relay_killed_mid_batch_loses_no_event(db, runtime, consume):
    settings = runtime.settings
    async with running_relay(runtime.pool, settings):  # start from an empty backlog
        await wait_until(lambda: _zero(unpublished(db)), what="the backlog to drain")
    ids = await bulk_payments(runtime, 400)
    wanted = await event_ids(db, ids)

    first = _relay_process(settings, batch_size=10)
    try:
        await wait_until(lambda: _more_than(unpublished(db, ids), 0, invert=True, total=len(ids)),
                         what="the relay to publish something")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    left = await unpublished(db, ids)
    assert 0 < left < len(ids), f"the kill should land mid-way ({left} of {len(ids)} left)"

    second = _relay_process(settings, batch_size=50)
    try:
        await wait_until(lambda: _zero(unpublished(db, ids)), what="the restarted relay to drain")
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, second.stderr.read().decode()[-2000:]
    finally:
        if second.poll() is None:
            second.kill()
    records = await consume(settings.kafka_bootstrap, settings.events_topic, wanted)
    assert wanted <= {event.id for _, event, _ in records}


async def _more_than(awaitable, n: int, *, invert: bool = False, total: int = 0) -> bool:
    value = await awaitable
    return (total - value) > n if invert else value > n


async def test_broker_outage_commands_succeed_and_every_event_arrives_later(api, db, runtime, consume, tmp_path):
    # The session's kind of broker (one that keeps its log), but the test's own: it stops it.
    with private_kafka(tmp_path / "private-kafka", runtime.settings, keeping_broker()) as (broker, endpoints):
        settings = CommandSettings.from_settings(runtime.settings, kafka_bootstrap=endpoints.kafka_bootstrap,
                                                 events_topic=f"outage-{uuid.uuid4().hex[:8]}")
        async with running_relay(runtime.pool, settings) as relay:
            before = await api.created(description="before the outage")
            await wait_until(lambda: _zero(unpublished(db, [before["id"]])), what="the first event")

            await asyncio.to_thread(broker.stop_server, "kafka")
            during = [await api.created(description=f"during the outage {i}") for i in range(5)]
            patched = await api.request("PATCH", f"/v1/payments/{during[0]['id']}", json={"amount": 7})
            assert patched.status_code == 200
            ids = [p["id"] for p in during]
            await wait_until(lambda: _false(relay.kafka_ok), timeout=20, what="the relay to notice the outage")
            assert await unpublished(db, ids) == 6, "nothing can be published while the broker is down"
            assert OUTBOX_BACKLOG._value.get() >= 6 and OUTBOX_PUBLISH_LAG._value.get() > 0.5

            await asyncio.to_thread(broker.start_server, "kafka")  # same port, same log
            await wait_until(lambda: _zero(unpublished(db, ids)), timeout=60, what="the backlog to drain")
            wanted = await event_ids(db, [before["id"], *ids])
            records = await consume(endpoints.kafka_bootstrap, settings.events_topic, wanted,
                                    settings=Settings.model_construct())  # Kafka-legal defaults
            assert wanted <= {event.id for _, event, _ in records}, "the event published before the restart survived it"
            assert relay.kafka_ok


async def test_relay_creates_its_topic_only_when_told_and_reports_why_not(db, runtime, tmp_path):
    # Kafka-strict about replicas
    with private_kafka(tmp_path / "private-kafka", runtime.settings, keeping_broker()) as (_, endpoints):
        await _relay_topic_creation(db, runtime, endpoints.kafka_bootstrap)


async def _relay_topic_creation(db, runtime, bootstrap: str) -> None:
    topic = f"created-{uuid.uuid4().hex[:8]}"
    base = CommandSettings.from_settings(runtime.settings, kafka_bootstrap=bootstrap)
    told_not = CommandSettings.from_settings(base, events_topic=topic, kafka_create_topics=False)
    async with running_relay(runtime.pool, told_not) as relay:
        await wait_until(lambda: _true(lambda: "PAYMENTS_KAFKA_CREATE_TOPICS" in relay.last_error), timeout=20,
                         what="the relay to report the missing topic")
        assert not relay.kafka_ok and topic in relay.last_error
    # One broker cannot hold 3 replicas: the broker's error code becomes a clear error.
    too_many = CommandSettings.from_settings(base, events_topic=topic, kafka_create_topics=True,
                                             kafka_topic_replication_factor=3, kafka_topic_min_insync_replicas=2)
    with pytest.raises(TopicError, match=f"{topic}: error 38 InvalidReplicationFactorError"):
        await OutboxRelay(db.pool, too_many)._ensure_topic()
    told = CommandSettings.from_settings(base, events_topic=topic, kafka_create_topics=True)
    relay = OutboxRelay(db.pool, told)
    await relay._ensure_topic()  # created
    await relay._ensure_topic()  # exists: fine
    assert topic in await list_topics(told.kafka_bootstrap)


async def list_topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _true(predicate) -> bool:
    return predicate()


async def test_published_rows_stay_in_the_event_log(db, runtime):
    """The outbox is the permanent event log (issue 23): the purge never deletes an event,
    however old its publication, and each row names its actor and command."""
    ids = await bulk_payments(runtime, 2, org="org-purge")
    async with db.pool.acquire() as conn:
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '400 days' WHERE payment_id = $1", ids[0])
        await OutboxRelay(db.pool, runtime.settings).purge(force=True)
        rows = await conn.fetch("SELECT payment_id, actor, command_id FROM outbox"
                                " WHERE organization_id = 'org-purge' AND payment_id = ANY($1::text[])", ids)
    assert {r["payment_id"] for r in rows} == set(ids)
    assert {(r["payment_id"], r["command_id"]) for r in rows} == {(p, f"create-{p}") for p in ids}


async def test_idempotency_keys_expire_after_their_retention(db, runtime):
    settings = CommandSettings.from_settings(runtime.settings, idempotency_key_retention_seconds=3600)
    async with db.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO idempotency_keys (organization_id, key, request_hash, created_at) "
            "VALUES ('org-keys', $1, 'h', now() - make_interval(secs => $2))",
            [("old-key", 7200.0), ("fresh-key", 60.0)])
        await OutboxRelay(db.pool, settings).purge(force=True)
        kept = {r["key"] for r in await conn.fetch("SELECT key FROM idempotency_keys WHERE organization_id = 'org-keys'")}
    assert kept == {"fresh-key"}
