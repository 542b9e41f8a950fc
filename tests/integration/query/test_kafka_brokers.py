"""The Kafka-strict embedded broker (noida-db), whatever PAYMENTS_STACK_KAFKA the suite
runs on: Kafka's group session limits, the idempotent producer, real end offsets,
records kept across a broker restart, librdkafka clients, and the projector with
exactly the Kafka client settings docker-compose.yml and the Helm chart give it (none:
the production defaults) joining, projecting and committing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidSessionTimeoutError

from devstack import LocalStack
from shared.events import EventType, new_event
from shared.kafka import TopicSpec, consumer_options, ensure_topics, group_consumer, producer_options
from shared.settings import Settings
from tests.support.builders import snapshot
from tests.support.children import ProjectorProcess, eventually

ROOT = Path(__file__).parents[3]
DEFAULTS = Settings.model_construct()  # field defaults only: no env, no stack.json


@pytest.fixture(scope="module")
def noida(tmp_path_factory, settings: Settings):
    """A private noida-db broker (every other server is the session's)."""
    stack = LocalStack(tmp_path_factory.mktemp("noida"), headless=True, write_stack_file=False,
                       kafka_broker="noida", external_timeout=30, database_url=settings.database_url, redis_url=settings.redis_url,
                       temporal_address=settings.temporal_address, mongo_url=settings.mongo_url)
    endpoints = stack.start()
    yield stack, endpoints.kafka_bootstrap
    stack.stop()


def deployed_kafka_settings(source: str) -> dict[str, str]:
    """The PAYMENTS_KAFKA_* values (but the bootstrap) docker-compose.yml gives the
    projector, or the Helm chart's default values give every process."""
    if source == "compose":
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        env = compose["services"]["projector"].get("environment") or {}
    else:
        values = yaml.safe_load((ROOT / "deploy/helm/payments-cqs/values.yaml").read_text())
        env = values["config"].get("extra") or {}
    # compose's ${NAME:-default}: the default
    return {k: re.sub(r"\$\{[^:}]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()
            if k.startswith("PAYMENTS_KAFKA_") and k != "PAYMENTS_KAFKA_BOOTSTRAP"}


async def test_kafka_group_session_limits_are_enforced(noida) -> None:
    _, bootstrap = noida
    topic = f"limits-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, 1)], create=True)
    short = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
                             session_timeout_ms=2000, heartbeat_interval_ms=500)
    with pytest.raises(InvalidSessionTimeoutError):  # what a stock Kafka answers (< 6 s)
        await short.start()
        await short.getmany(timeout_ms=5000)
    await short.stop()
    ours = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g2-{topic}", **consumer_options(DEFAULTS))
    await ours.start()
    try:
        await ours.getmany(timeout_ms=1000)
        assert ours.assignment() == {TopicPartition(topic, 0)}
    finally:
        await ours.stop()


async def test_idempotent_producer_end_offsets_and_a_restart_keep_every_record(noida) -> None:
    stack, bootstrap = noida
    topic = f"persist-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 2, 1, 1)], create=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(DEFAULTS))
    await producer.start()
    try:
        for i in range(7):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=i % 2)
    finally:
        await producer.stop()
    await asyncio.to_thread(stack.restart_server, "kafka")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        assert await consumer.end_offsets(tps) == {tps[0]: 4, tps[1]: 3}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = await consumer.getmany(timeout_ms=3000)
        assert sorted(m.value for batch in got.values() for m in batch) == [f"v{i}".encode() for i in range(7)]
    finally:
        await consumer.stop()


def test_librdkafka_clients_produce_and_consume(noida) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    _, bootstrap = noida
    topic = f"rdkafka-{uuid.uuid4().hex[:8]}"
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(5):
        producer.produce(topic, key=b"k", value=f"r{i}".encode())
    assert producer.flush(15) == 0
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                got.append(message.value())
            if len(got) == 5:
                break
    finally:
        consumer.close()
    assert got == [f"r{i}".encode() for i in range(5)]
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat:  # Debian's kcat (librdkafka 2.0)
        out = subprocess.run([kcat, "-b", bootstrap, "-C", "-t", topic, "-e", "-q"], capture_output=True,
                             text=True, timeout=30)
        assert out.stdout.split() == [f"r{i}" for i in range(5)], out.stderr


@pytest.mark.parametrize("source", ["compose", "helm"])
async def test_projector_with_the_deployed_kafka_settings_joins_projects_and_commits(
        source, noida, qsettings, runtime, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("PAYMENTS_KAFKA_") and k != "PAYMENTS_KAFKA_BOOTSTRAP"]:
        monkeypatch.delenv(key)  # not the local stack's overrides: the deployment's values only
    for key, value in deployed_kafka_settings(source).items():
        monkeypatch.setenv(key, value)
    _, bootstrap = noida
    s = qsettings.model_copy(update={"kafka_bootstrap": bootstrap})
    specs = [TopicSpec(s.events_topic, 3, 1, 1), TopicSpec(s.dlq_topic, 1, 1, 1)]  # the deployment's job
    await ensure_topics(bootstrap, specs, create=True)
    projector = ProjectorProcess(s, tmp_path)
    projector.start()
    try:
        await projector.ready()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(DEFAULTS))
        await producer.start()
        try:
            for i in range(6):
                event = new_event(EventType.CREATED, snapshot(f"n{i}", "org-noida", amount=10 + i))
                await producer.send_and_wait(s.events_topic, event.to_json_bytes(), key=event.subject.encode())
        finally:
            await producer.stop()

        async def projected() -> bool:
            return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) == 6

        await eventually(projected, 30, "the events projected on noida-db")

        async def committed() -> bool:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=s.projector_group)
            await consumer.start()
            try:
                offsets = [await consumer.committed(TopicPartition(s.events_topic, p)) for p in range(3)]
            finally:
                await consumer.stop()
            return sum(o or 0 for o in offsets) == 6

        await eventually(committed, 30, "the projector's committed offsets")
    finally:
        projector.stop()



async def test_an_idle_consumer_on_noida_db_is_paced_not_spinning(noida) -> None:
    """noida-db answers an empty fetch at once instead of holding it for fetch_max_wait_ms:
    unpaced, an idle consumer re-fetches in a busy loop. With the local stack's pause
    (PAYMENTS_KAFKA_EMPTY_FETCH_PAUSE_MS) it fetches at most once per pause, and a record
    produced meanwhile is still consumed."""
    stack, bootstrap = noida
    pause_ms = 20
    assert stack.client_settings()["kafka_empty_fetch_pause_ms"] > 0
    topic = f"paced-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, 1)], create=True)
    settings = Settings(kafka_bootstrap=bootstrap, kafka_empty_fetch_pause_ms=pause_ms)
    counts = {"paced": 0, "unpaced": 0}

    def counting(consumer: AIOKafkaConsumer, name: str) -> AIOKafkaConsumer:
        send = consumer._client.send

        async def counted(node_id, request, *args, **kwargs):
            if type(request).__name__ == "FetchRequest":
                counts[name] += 1
            return await send(node_id, request, *args, **kwargs)

        consumer._client.send = counted
        return consumer

    paced = group_consumer(settings, topic, group_id=f"p-{topic}", auto_offset_reset="earliest")
    counting(paced, "paced")  # each call of the paced send is one fetch sent to the broker
    unpaced = counting(AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"u-{topic}",
                                        **consumer_options(Settings(kafka_bootstrap=bootstrap))), "unpaced")
    await paced.start()
    await unpaced.start()
    try:
        await paced.getmany(timeout_ms=2000)
        await unpaced.getmany(timeout_ms=2000)
        counts.update(paced=0, unpaced=0)
        await asyncio.gather(paced.getmany(timeout_ms=1000), unpaced.getmany(timeout_ms=1000))
        assert counts["paced"] <= 1.5 * 1000 / pause_ms, counts
        assert counts["unpaced"] > 3 * counts["paced"], counts  # the quirk the pause is for
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"after the pause")
        finally:
            await producer.stop()
        got = await paced.getmany(timeout_ms=2000)
        assert [r.value for rs in got.values() for r in rs] == [b"after the pause"]
    finally:
        await paced.stop()
        await unpaced.stop()
