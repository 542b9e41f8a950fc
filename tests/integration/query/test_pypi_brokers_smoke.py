"""The PyPI brokers, in every run, so that nothing assumes the session's broker (Apache
Kafka wherever java 17+ and mvn exist): noida-db (``payments stack up --kafka noida``) and
the memory-only Tansu (``--kafka tansu``), each a private broker of this module. The
projector with what the local stack gives it there (stack.json's settings; on noida-db a
static group instance id) projecting and dead-lettering, and ``payments replay`` (with
``--idle`` on Tansu, whose end offsets are wrong)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.brokers import BROKERS
from shared.events import EventType, new_event
from shared.kafka import producer_options
from shared.settings import Settings
from tests.support.brokers import private_kafka
from tests.support.builders import snapshot
from tests.support.children import ProjectorProcess, eventually, settings_env


@pytest.fixture(scope="module", params=["noida", "tansu"])
def pypi_broker(request, tmp_path_factory, settings: Settings):
    """(name, endpoints) of a private broker (every other server is the session's)."""
    with private_kafka(tmp_path_factory.mktemp(request.param), settings, request.param) as (_, endpoints):
        yield request.param, endpoints


async def _records(s: Settings, topic: str, expected: int) -> list:
    """The first ``expected`` records of ``topic``, read without a consumer group."""
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


async def test_projector_and_replay(pypi_broker, qsettings, runtime, tmp_path) -> None:
    name, endpoints = pypi_broker
    # What the local stack writes for the broker (Tansu: no idempotent producer, short fetch wait, 2 s session).
    s = qsettings.model_copy(update={"kafka_bootstrap": endpoints.kafka_bootstrap, **endpoints.client_settings})
    assert s.kafka_producer_idempotence is (name != "tansu")
    env = {**settings_env(s), **{k: v for k, v in endpoints.as_env().items() if k.startswith("PAYMENTS_KAFKA_")}}
    projector = ProjectorProcess(s, tmp_path, env=env, static=BROKERS[name].static_members)
    projector.start()
    try:
        await projector.ready()
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, **producer_options(s))
        await producer.start()
        try:
            for i in range(5):
                event = new_event(EventType.CREATED, snapshot(f"t{i}", f"org-{name}", amount=10 + i))
                await producer.send_and_wait(s.events_topic, event.to_json_bytes(), key=event.subject.encode())
            await producer.send_and_wait(s.events_topic, b"{not an event", key=b"junk")
        finally:
            await producer.stop()

        async def projected() -> bool:
            return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) == 5

        await eventually(projected, 30, f"the events projected on {name}")
        [dead] = await _records(s, s.dlq_topic, 1)
        headers = dict(dead.headers)
        assert (dead.key, dead.value) == (b"junk", b"{not an event")
        assert headers["dlq-kind"] == b"invalid" and headers["dlq-source-topic"] == s.events_topic.encode()
    finally:
        projector.stop()
    idle = ["--idle", "1"] if name == "tansu" else []
    replay = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "replay", "--no-progress", *idle],
        env=env, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert "applied 5" in replay.stdout, replay.stdout
