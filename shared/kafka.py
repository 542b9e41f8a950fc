"""Kafka topics and client options, written once for the relay, the projector, the
intake, replay and the local stack.

Topics belong to the deployment: the Helm hook Job and compose's ``kafka-init`` run
``payments topics`` (``topic_specs``), the local stack creates ``event_topics`` on its
broker. ``ensure_topics`` is the one place that creates topics: it creates missing ones
only when told to and otherwise raises ``TopicMissing`` with a message saying who
creates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.protocol.fetch import FetchRequest

from shared.settings import Settings

TOPIC_ALREADY_EXISTS = 36


class TopicError(RuntimeError):
    """A topic could not be created; the message names the topic and the broker's error."""


class TopicMissing(TopicError):
    """A topic does not exist and this process was not told to create it."""


# The events topic keeps every event (issue 23): a rebuild from the topic (`payments
# replay`) needs them all. Time and size retention off; deletion, never compaction: the
# relay keys records by payment id alone, which two organizations may share, so
# compaction would keep one tenant's payment in place of another's.
KEEP_EVERY_EVENT = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


def losing_configs(configs: Mapping[str, str | None]) -> list[str]:
    """Why a topic with these configs (as the broker describes them) would drop events;
    empty when it keeps every one."""
    reasons = []
    for key in ("retention.ms", "retention.bytes"):
        value = configs.get(key)
        if value != "-1":
            reasons.append(f"{key}={value} (the broker deletes older records)" if value is not None
                           else f"{key} unknown")
    if "compact" in (configs.get("cleanup.policy") or ""):
        reasons.append("cleanup.policy=compact (one record per key: the payment id, shared by organizations)")
    return reasons


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    keeps_every_event: bool = False

    def configs(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync_replicas),
                **(KEEP_EVERY_EVENT if self.keeps_every_event else {})}


def event_topics(settings: Settings) -> list[TopicSpec]:
    """The events topic and its dead-letter topic (the relay's and the projector's)."""
    rf, isr = settings.kafka_topic_replication_factor, settings.kafka_topic_min_insync_replicas
    return [
        TopicSpec(settings.events_topic, settings.events_topic_partitions, rf, isr, keeps_every_event=True),
        # One partition: DLQ records are few and read by tools in order.
        TopicSpec(settings.dlq_topic, 1, rf, isr),
    ]


def command_topics(settings: Settings) -> list[TopicSpec]:
    """The intake's topics: commands, their results, their dead letters."""
    rf, isr = settings.kafka_topic_replication_factor, settings.kafka_topic_min_insync_replicas
    return [
        TopicSpec(settings.commands_topic, settings.commands_topic_partitions, rf, isr),
        TopicSpec(settings.command_results_topic, settings.commands_topic_partitions, rf, isr),
        TopicSpec(settings.commands_dlq_topic, 1, rf, isr),
    ]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the deployment creates (``payments topics``, the Helm hook Job)."""
    return event_topics(settings) + command_topics(settings)


def created_topics(topic_errors: Iterable[Sequence[Any]]) -> list[str]:
    """The topics a CreateTopics response created. aiokafka 0.14 returns per-topic error
    codes instead of raising: "already exists" is fine (another process won the race),
    any other code raises TopicError naming the topic and the error."""
    created: list[str] = []
    for entry in topic_errors:
        topic, code, message = entry[0], entry[1], entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(topic)
        elif code != TOPIC_ALREADY_EXISTS:
            name = kafka_errors.for_code(code).__name__
            raise TopicError(f"could not create Kafka topic {topic}: error {code} {name}"
                             + (f": {message}" if message else ""))
    return created


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], *, create: bool,
                        request_timeout_ms: int = 5000) -> list[str]:
    """Check that every topic of ``specs`` exists; create the missing ones if ``create``,
    else raise TopicMissing. Returns the names of the topics created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        if not create:
            raise TopicMissing(
                f"Kafka topic(s) {', '.join(s.name for s in missing)} missing on {bootstrap}: the deployment "
                "creates them (Helm hook Job, compose kafka-init, payments stack up); "
                "or set PAYMENTS_KAFKA_CREATE_TOPICS=true to let this process create them")
        response = await admin.create_topics([
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs()) for s in missing])
        return created_topics(response.topic_errors)
    finally:
        await admin.close()


async def topic_drift(bootstrap: str, specs: Sequence[TopicSpec], *, request_timeout_ms: int = 5000) -> list[str]:
    """How the topics on the broker differ from what ``specs`` promise, read back from it
    (DescribeTopics: partitions and each one's replicas; DescribeConfigs: every config of
    ``TopicSpec.configs()``); one line per difference, empty when they hold what was promised."""
    described, configs, refused = await _describe(bootstrap, [s.name for s in specs], request_timeout_ms)
    drift = []
    for spec in specs:
        topic = described.get(spec.name) or {}
        code = topic.get("error_code", -1) or refused.get(spec.name, -1)
        if code != 0:  # 3: unknown topic; others (ACLs...): not readable
            drift.append(f"{spec.name}: {'missing' if code == 3 else 'not read back'} "
                         f"({kafka_errors.for_code(code).__name__})")
            continue
        partitions = topic["partitions"]
        if len(partitions) != spec.partitions:
            drift.append(f"{spec.name}: {len(partitions)} partitions, promised {spec.partitions}")
        replicas = sorted({len(p["replicas"]) for p in partitions})
        if replicas != [spec.replication_factor]:
            drift.append(f"{spec.name}: replication {'/'.join(map(str, replicas))}, promised {spec.replication_factor}")
        drift += [f"{spec.name}: {key}={configs[spec.name].get(key)}, promised {value}"
                  for key, value in spec.configs().items() if configs[spec.name].get(key) != value]
        if spec.keeps_every_event and (reasons := losing_configs(configs[spec.name])):
            drift.append(f"{spec.name}: would lose events: {'; '.join(reasons)}")
    return drift


async def topic_losses(bootstrap: str, topic: str, *, request_timeout_ms: int = 5000) -> list[str]:
    """Why ``topic``, as the broker holds it, would lose events (:func:`losing_configs`)."""
    _, configs, refused = await _describe(bootstrap, [topic], request_timeout_ms)
    if topic not in configs:
        return [f"configs not readable ({kafka_errors.for_code(refused.get(topic, -1)).__name__})"]
    return losing_configs(configs[topic])


async def _describe(bootstrap: str, names: list[str],
                    request_timeout_ms: int) -> tuple[dict[str, Any], dict[str, dict[str, str]], dict[str, int]]:
    """DescribeTopics and DescribeConfigs of ``names``: (topics, configs, config error codes)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics(names)}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    refused: dict[str, int] = {}
    for response in responses:
        for code, _, _, name, entries, *_ in response.resources:
            if code == 0:
                configs[name] = {entry[0]: entry[1] for entry in entries}
            refused[name] = code
    return described, configs, refused


def partition_offsets(records: Iterable[Any], pick: Callable[[int, int], int] = max,
                      shift: int = 1) -> dict[TopicPartition, int]:
    """Per partition of ``records`` (aiokafka ConsumerRecords): by default the offset to
    commit after them (one past the last); ``pick=min, shift=0``: the first, to seek back to."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = pick(offsets.get(tp, record.offset + shift), record.offset + shift)
    return offsets


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of ``topic`` (none if it does not exist), for a consumer without a
    group that assigns them itself (replay, the DLQ tools). aiokafka's ``topics()`` fetches
    every topic's metadata but keeps it only in what it returns: ``partitions_for_topic``
    afterwards knows only the topics the consumer asked for. noida-db answered the client's
    background request naming no topic with every topic, Apache Kafka (rightly) with none,
    so on a real broker that pair found no partitions (docs/design.md section 11)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def stop_clients(*clients: Any) -> None:
    """Stop aiokafka consumers / producers (None: never started), each within 10 s. An
    error while stopping is dropped: the process is ending, and its offsets are committed
    already."""
    for client in clients:
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), 10)


def producer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options from the PAYMENTS_KAFKA_PRODUCER_* settings."""
    acks: Any = settings.kafka_producer_acks if settings.kafka_producer_acks == "all" else int(
        settings.kafka_producer_acks)
    return {
        "acks": acks,
        "enable_idempotence": settings.kafka_producer_idempotence,
        "linger_ms": settings.kafka_producer_linger_ms,
    }


def sticky_assignor() -> type[StickyPartitionAssignor]:
    """The sticky assignor, with state of its own (aiokafka keeps it on the class, so two
    consumers in one process would otherwise advertise each other's partitions).

    Sticky, not aiokafka's round-robin default: noida-db makes a static member that was
    the group's leader and restarts (SIGKILL, then the same group.instance.id) leader
    again, and it assigns anew without the others being told (Kafka answers it with the
    old leader's id instead, KIP-345). Round-robin then hands it a partition another
    member still holds and leaves its own unowned; sticky keeps every member's reported
    partitions where they are (measured: the projector replica test stalled 3 runs of 4
    with round-robin, the intake's 3 of 3). On Kafka it also moves fewer partitions at
    every rebalance (docs/design.md section 11)."""
    return type("StickyAssignor", (StickyPartitionAssignor,), {"member_assignment": None, "generation": -1})


def consumer_options(settings: Settings) -> dict[str, Any]:
    """aiokafka consumer options from the PAYMENTS_KAFKA_* settings, for every consumer group."""
    options: dict[str, Any] = {
        "session_timeout_ms": int(settings.kafka_session_timeout_seconds * 1000),
        "heartbeat_interval_ms": int(settings.kafka_heartbeat_interval_seconds * 1000),
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "partition_assignment_strategy": (sticky_assignor(),),
    }
    if settings.kafka_group_instance_id:  # static membership (the setting says when)
        options["group_instance_id"] = settings.kafka_group_instance_id
    return options


def group_consumer(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer-group member (the projector's, the intake's) with :func:`consumer_options`
    (``options`` override them), its empty fetches paced by
    ``PAYMENTS_KAFKA_EMPTY_FETCH_PAUSE_MS``."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=settings.kafka_bootstrap,
                                **{**consumer_options(settings), **options})
    pace_empty_fetches(consumer, settings.kafka_empty_fetch_pause_ms / 1000)
    return consumer


def pace_empty_fetches(consumer: AIOKafkaConsumer, pause: float) -> None:
    """Let at least ``pause`` seconds pass between a fetch that came back empty and the
    next one. Kafka holds an empty fetch for ``fetch_max_wait_ms`` (the pause never
    applies there); a broker that answers at once (noida-db) would otherwise be fetched
    from in a busy loop. aiokafka has no hook between fetches, so this wraps its client's
    ``send``, the one seam."""
    if pause <= 0:
        return
    client = consumer._client
    send = client.send

    async def paced(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        response = await send(node_id, request, *args, **kwargs)
        if isinstance(request, FetchRequest) and not _has_records(response):
            await asyncio.sleep(max(0.0, started + pause - time.monotonic()))
        return response

    client.send = paced


def _has_records(response: Any) -> bool:
    # Each partition's record set is the last field of its entry, in every Fetch version.
    return any(part[-1] for _, parts in response.topics for part in parts)
