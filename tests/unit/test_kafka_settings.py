"""Kafka client settings and topic creation outcomes (shared/kafka.py, shared/settings.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.kafka import TopicError, consumer_options, created_topics, producer_options, topic_specs
from shared.settings import Settings


def test_already_existing_topics_are_fine_and_other_codes_are_clear_errors() -> None:
    assert created_topics([("a", 0, None), ("b", 36, "Topic 'b' already exists.")]) == ["a"]
    with pytest.raises(TopicError, match=r"topic c: error 38 InvalidReplicationFactorError: only 1 broker"):
        created_topics([("a", 0, None), ("c", 38, "only 1 broker")])


def test_defaults_are_inside_a_stock_brokers_limits() -> None:
    s = Settings()
    consumer = consumer_options(s)
    # group.min.session.timeout.ms = 6000, group.max.session.timeout.ms = 1800000
    assert 6000 <= consumer["session_timeout_ms"] <= 1_800_000
    assert consumer["heartbeat_interval_ms"] * 3 <= consumer["session_timeout_ms"]
    assert producer_options(s) == {"acks": "all", "enable_idempotence": True, "linger_ms": 2}
    specs = topic_specs(s)
    assert [t.name for t in specs] == [s.events_topic, s.dlq_topic, s.commands_topic, s.command_results_topic,
                                       s.commands_dlq_topic]
    assert {(t.replication_factor, t.min_insync_replicas) for t in specs} == {(3, 2)}


@pytest.mark.parametrize("values, message", [
    ({"kafka_session_timeout_seconds": 6, "kafka_heartbeat_interval_seconds": 3}, "a third"),
    ({"kafka_producer_acks": "1"}, "ACKS=all"),
    ({"kafka_topic_replication_factor": 1}, "must not exceed"),
])
def test_settings_kafka_would_refuse_are_rejected(values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_acks_one_without_idempotence_is_allowed() -> None:
    assert producer_options(Settings(kafka_producer_acks="1", kafka_producer_idempotence=False))["acks"] == 1


def test_static_membership_only_when_a_group_instance_id_is_set() -> None:
    assert "group_instance_id" not in consumer_options(Settings())  # a Deployment's pods: dynamic
    assert consumer_options(Settings(kafka_group_instance_id="payments-projector-0"))["group_instance_id"] == (
        "payments-projector-0")


def test_every_consumer_gets_a_sticky_assignor_with_state_of_its_own() -> None:
    from aiokafka import TopicPartition
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    first, second = (consumer_options(Settings())["partition_assignment_strategy"][0] for _ in range(2))
    assert first.name == second.name == "sticky" and first is not second
    first.on_assignment(ConsumerProtocolMemberAssignment(0, [("t", [0, 2])], b""))
    assert first.member_assignment == [TopicPartition("t", 0), TopicPartition("t", 2)]
    assert second.member_assignment is None  # not the other consumer's partitions
    assert first.metadata(["t"]).user_data and not second.metadata(["t"]).user_data


def test_a_batch_commits_one_past_the_last_record_of_each_partition() -> None:
    from aiokafka import TopicPartition

    from shared.kafka import partition_offsets

    Record = type("Record", (), {})
    records = []
    for partition, offset in [(0, 5), (1, 9), (0, 7), (0, 6)]:
        record = Record()
        record.topic, record.partition, record.offset = "t", partition, offset
        records.append(record)
    assert partition_offsets(records) == {TopicPartition("t", 0): 8, TopicPartition("t", 1): 10}
    assert partition_offsets(records, min, 0) == {TopicPartition("t", 0): 5, TopicPartition("t", 1): 9}


def test_an_events_topic_keeps_every_event_only_without_retention_or_compaction() -> None:
    from shared.kafka import KEEP_EVERY_EVENT, event_topics, losing_configs
    from shared.settings import Settings

    assert losing_configs(KEEP_EVERY_EVENT) == []
    assert event_topics(Settings.model_construct())[0].configs() == {"min.insync.replicas": "2", **KEEP_EVERY_EVENT}
    stock = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete"}
    assert losing_configs(stock) == ["retention.ms=604800000 (the broker deletes older records)"]
    compacted = {**KEEP_EVERY_EVENT, "cleanup.policy": "compact"}
    assert ["compact" in r for r in losing_configs(compacted)] == [True]
    assert losing_configs({}) == ["retention.ms unknown", "retention.bytes unknown"]
