"""The Kafka behaviour the project relies on, probed on both Kafka-strict brokers whatever
broker the session runs on: Apache Kafka (wherever java 17+ and mvn exist) and noida-db,
each a private broker of this module. Kafka's group session limits, the idempotent
producer, real end offsets, records kept across a broker restart, librdkafka clients, and
what an idle consumer costs (noida-db answers an empty fetch at once: the stand-in's pace,
docs/design.md section 11). Tansu has its own smoke test (test_tansu_smoke.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidSessionTimeoutError

from devstack.apache_kafka import missing_tools
from shared.kafka import TopicSpec, consumer_options, ensure_topics, group_consumer, producer_options
from shared.settings import Settings
from tests.support.brokers import private_kafka

DEFAULTS = Settings.model_construct()  # field defaults only: no env, no stack.json


@pytest.fixture(scope="module", params=["apache", "noida"])
def broker(request, tmp_path_factory, settings: Settings):
    """(name, its LocalStack, bootstrap) of a private broker."""
    if request.param == "apache" and missing_tools():
        pytest.skip(str(missing_tools()))
    with private_kafka(tmp_path_factory.mktemp(request.param), settings, request.param) as (stack, endpoints):
        yield request.param, stack, endpoints.kafka_bootstrap


async def test_kafka_group_session_limits_are_enforced(broker) -> None:
    _, _, bootstrap = broker
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


async def test_idempotent_producer_end_offsets_and_a_restart_keep_every_record(broker) -> None:
    _, stack, bootstrap = broker
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


def test_librdkafka_clients_produce_and_consume(broker) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    _, _, bootstrap = broker
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


async def test_what_an_idle_consumer_costs_and_the_stand_ins_pace(broker) -> None:
    """Kafka holds an empty fetch for fetch_max_wait_ms (500 ms): an idle consumer fetches
    about twice a second, unpaced. noida-db answers it at once: unpaced, an idle consumer
    re-fetches in a busy loop; with the local stack's pause (PAYMENTS_KAFKA_EMPTY_FETCH_PAUSE_MS,
    noida-db only) at most once per pause, and a record produced meanwhile is still consumed."""
    name, stack, bootstrap = broker
    pause_ms = 20
    assert (stack.client_settings().get("kafka_empty_fetch_pause_ms", 0) > 0) == (name == "noida")
    topic = f"paced-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, 1)], create=True)
    counts = {"paced": 0, "unpaced": 0}

    def counting(consumer: AIOKafkaConsumer, kind: str) -> AIOKafkaConsumer:
        send = consumer._client.send

        async def counted(node_id, request, *args, **kwargs):
            if type(request).__name__ == "FetchRequest":
                counts[kind] += 1
            return await send(node_id, request, *args, **kwargs)

        consumer._client.send = counted
        return consumer

    paced = group_consumer(Settings(kafka_bootstrap=bootstrap, kafka_empty_fetch_pause_ms=pause_ms), topic,
                           group_id=f"p-{topic}", auto_offset_reset="earliest")
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
        if name == "noida":
            assert counts["unpaced"] > 3 * counts["paced"], counts  # the quirk the pause is for
        else:
            assert counts["unpaced"] <= 1.5 * 1000 / DEFAULTS.kafka_fetch_max_wait_ms + 1, counts  # held: no pause needed
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
