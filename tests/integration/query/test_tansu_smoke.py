"""The other embedded broker, Tansu (``payments stack up --kafka tansu``), in every run, so
that nothing assumes noida-db: the local stack's Tansu settings (stack.json), the
projector with a static group instance id (as the local stack starts it) projecting and
dead-lettering, and ``payments replay`` on Tansu's end offsets."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack import LocalStack
from shared.events import EventType, new_event
from shared.kafka import producer_options
from shared.settings import Settings
from tests.support.builders import snapshot
from tests.support.children import ProjectorProcess, eventually, settings_env


@pytest.fixture(scope="module")
def tansu(tmp_path_factory, settings: Settings):
    """A private Tansu broker (every other server is the session's)."""
    stack = LocalStack(tmp_path_factory.mktemp("tansu"), headless=True, write_stack_file=False,
                       kafka_broker="tansu", external_timeout=30, database_url=settings.database_url,
                       redis_url=settings.redis_url, temporal_address=settings.temporal_address,
                       mongo_url=settings.mongo_url)
    endpoints = stack.start()
    yield endpoints
    stack.stop()


async def _records(s: Settings, topic: str, expected: int) -> list:
    """The first ``expected`` records of ``topic``, read without a consumer group (Tansu's)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=s.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=300)
            records.extend(r for rs in batch.values() for r in rs)
            return len(records) >= expected

        await eventually(enough, 30, f"{expected} record(s) on {topic}")
    finally:
        await consumer.stop()
    return records


async def test_projector_and_replay_on_tansu(tansu, qsettings, runtime, tmp_path) -> None:
    # What the local stack writes for Tansu (no idempotent producer, short fetch wait, 2 s session).
    s = qsettings.model_copy(update={"kafka_bootstrap": tansu.kafka_bootstrap, **tansu.client_settings})
    assert s.kafka_producer_idempotence is False
    env = {**settings_env(s), **{k: v for k, v in tansu.as_env().items() if k.startswith("PAYMENTS_KAFKA_")}}
    projector = ProjectorProcess(s, tmp_path, env=env)
    projector.start()
    try:
        await projector.ready()
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, **producer_options(s))
        await producer.start()
        try:
            for i in range(5):
                event = new_event(EventType.CREATED, snapshot(f"t{i}", "org-tansu", amount=10 + i))
                await producer.send_and_wait(s.events_topic, event.to_json_bytes(), key=event.subject.encode())
            await producer.send_and_wait(s.events_topic, b"{not an event", key=b"junk")
        finally:
            await producer.stop()

        async def projected() -> bool:
            return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) == 5

        await eventually(projected, 30, "the events projected on Tansu")
        [dead] = await _records(s, s.dlq_topic, 1)
        headers = dict(dead.headers)
        assert (dead.key, dead.value) == (b"junk", b"{not an event")
        assert headers["dlq-kind"] == b"invalid" and headers["dlq-source-topic"] == s.events_topic.encode()
    finally:
        projector.stop()
    replay = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "replay", "--idle", "1", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert "applied 5" in replay.stdout, replay.stdout
