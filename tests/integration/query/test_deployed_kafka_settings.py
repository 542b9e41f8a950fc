"""Conformance on the session's broker (Apache Kafka wherever java 17+ and mvn exist, so
in CI): ``payments topics`` run as compose's ``kafka-init`` runs it creates the topics with
what shared/kafka.py's TopicSpec promises, and reading them back from the broker
(DescribeTopics, DescribeConfigs) finds exactly that; the projector, run with exactly the
Kafka settings docker-compose.yml and the Helm chart's values give it (none: the production
defaults), joins its group, projects and commits."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.events import EventType, new_event
from shared.kafka import TopicSpec, ensure_topics, producer_options, topic_drift, topic_losses, topic_specs
from shared.settings import Settings
from tests.support.builders import snapshot
from tests.support.children import ProjectorProcess, eventually

ROOT = Path(__file__).parents[3]
DEFAULTS = Settings.model_construct()  # field defaults only: no env, no stack.json


def _resolved(env: dict) -> dict[str, str]:
    # compose's ${NAME:-default}: the default
    return {k: re.sub(r"\$\{[^:}]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def deployed_kafka_settings(source: str) -> dict[str, str]:
    """The PAYMENTS_KAFKA_* values (but the bootstrap) docker-compose.yml gives the
    projector, or the Helm chart's default values give every process."""
    if source == "compose":
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        env = compose["services"]["projector"].get("environment") or {}
    else:
        values = yaml.safe_load((ROOT / "deploy/helm/payments-cqs/values.yaml").read_text())
        env = values["config"].get("extra") or {}
    return {k: v for k, v in _resolved(env).items() if k.startswith("PAYMENTS_KAFKA_") and k != "PAYMENTS_KAFKA_BOOTSTRAP"}


def kafka_init_env(settings: Settings) -> dict[str, str]:
    """compose's ``kafka-init`` environment (its topic settings), on the session's broker and
    with topic names of this test."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {k: v for k, v in _resolved(compose["services"]["kafka-init"]["environment"]).items()
           if k.startswith("PAYMENTS_") and ("TOPIC" in k)}
    tag = uuid.uuid4().hex[:8]
    names = {f"PAYMENTS_{name.upper()}": f"conformance.{tag}.{name}" for name in
             ("events_topic", "dlq_topic", "commands_topic", "command_results_topic", "commands_dlq_topic")}
    plain = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    return {**plain, **env, **names, "PAYMENTS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "PAYMENTS_DATA_DIR": str(settings.data_dir)}


async def test_payments_topics_creates_what_it_promises_and_reads_it_back(settings) -> None:
    env = kafka_init_env(settings)
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "topics", "--check"],
                                  env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "differs" not in run.stderr, run.stderr
    promised = topic_specs(Settings(**{k.removeprefix("PAYMENTS_").lower(): v for k, v in env.items()
                                       if k.startswith("PAYMENTS_")}))
    assert {s.partitions for s in promised} == {6, 1} and {s.replication_factor for s in promised} == {1}
    assert await topic_drift(settings.kafka_bootstrap, promised) == []
    # the events topic keeps every event: read back from the broker itself
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                  env["PAYMENTS_EVENTS_TOPIC"])])
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert (configs["retention.ms"], configs["retention.bytes"], configs["cleanup.policy"]) == ("-1", "-1", "delete")
    assert await topic_losses(settings.kafka_bootstrap, env["PAYMENTS_EVENTS_TOPIC"]) == []


async def test_an_events_topic_that_would_lose_events_is_reported_and_degrades_the_projector(
        settings, qsettings, tmp_path) -> None:
    """A topic made by hand with a stock retention (7 days) and compaction: `payments topics
    --check` fails naming it, the projector projects but its /readyz says degraded."""
    s = qsettings
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(s.events_topic, 3, 1, topic_configs={
            "retention.ms": "604800000", "cleanup.policy": "compact,delete"})])
    finally:
        await admin.close()
    env = {**kafka_init_env(settings), "PAYMENTS_EVENTS_TOPIC": s.events_topic}
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "topics", "--check"],
                                  env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"{s.events_topic}: would lose events: retention.ms=604800000" in run.stderr, run.stderr
    assert "cleanup.policy=compact" in run.stderr
    await ensure_topics(s.kafka_bootstrap, [TopicSpec(s.dlq_topic, 1, 1, 1)], create=True)
    projector = ProjectorProcess(s, tmp_path)
    projector.start()
    try:
        await projector.ready()
        async with httpx.AsyncClient(timeout=10) as http:
            ready = await http.get(f"http://127.0.0.1:{s.projector_metrics_port}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert s.events_topic in ready.json()["checks"]["events_topic_retention"]
        assert "retention.ms=604800000" in ready.json()["checks"]["events_topic_retention"]
    finally:
        projector.stop()


async def test_topic_drift_reports_what_the_broker_holds_otherwise(settings) -> None:
    """The read-back can fail: a topic made by hand with other partitions and configs."""
    name = f"drift-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1, topic_configs={"min.insync.replicas": "2"})])
    finally:
        await admin.close()
    drift = await topic_drift(settings.kafka_bootstrap, [TopicSpec(name, 3, 1, 1), TopicSpec(f"{name}-none", 1, 1, 1)])
    assert drift == [f"{name}: 2 partitions, promised 3", f"{name}: min.insync.replicas=2, promised 1",
                     f"{name}-none: missing (UnknownTopicOrPartitionError)"]


@pytest.mark.parametrize("source", ["compose", "helm"])
async def test_projector_with_the_deployed_kafka_settings_joins_projects_and_commits(
        source, qsettings, runtime, tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("PAYMENTS_KAFKA_") and k != "PAYMENTS_KAFKA_BOOTSTRAP"]:
        monkeypatch.delenv(key)  # not the local stack's overrides: the deployment's values only
    for key, value in deployed_kafka_settings(source).items():
        monkeypatch.setenv(key, value)
    s = qsettings
    bootstrap = s.kafka_bootstrap
    await ensure_topics(bootstrap, [TopicSpec(s.events_topic, 3, 1, 1), TopicSpec(s.dlq_topic, 1, 1, 1)], create=True)
    projector = ProjectorProcess(s, tmp_path)
    projector.start()
    try:
        await projector.ready()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options(DEFAULTS))
        await producer.start()
        try:
            for i in range(6):
                event = new_event(EventType.CREATED, snapshot(f"n{i}", "org-deployed", amount=10 + i))
                await producer.send_and_wait(s.events_topic, event.to_json_bytes(), key=event.subject.encode())
        finally:
            await producer.stop()

        async def projected() -> bool:
            return await (await runtime.read_model.active(fresh=True)).payments.count_documents({}) == 6

        await eventually(projected, 30, "the events projected")

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
