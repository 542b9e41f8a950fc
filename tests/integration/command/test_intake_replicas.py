"""Two ``payments intake`` replicas in one consumer group on the session's broker (noida-db
by default), as tests/integration/query/test_projector_replicas.py does for the projector:
a second replica joins mid-stream, the first is SIGKILLed and started again in its slot,
the second stops for good. No command may be lost or applied twice.

Slot 0 is a static group member (PAYMENTS_KAFKA_GROUP_INSTANCE_ID, as the local stack
gives it); the extra replica is dynamic, so it leaves the group on SIGTERM (docs/design.md
section 11). Each replica hosts a command worker (the default), beside the session's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.system import isolated
from services.command.bootstrap import CommandRuntime
from shared.kafka import consumer_options, topic_partitions
from shared.net import free_port
from shared.settings import Settings
from tests.support.children import ChildProcess, eventually

PAYMENTS = 120
PHASES = 4  # the stream is produced in four parts, one before each step
ORGS = 3
PREFIX = "com.gyroscops.payment.command."


class IntakeProcess(ChildProcess):
    """``payments intake`` with its own ops port (tests/integration/children.py)."""

    def __init__(self, env: dict[str, str], log_dir: Path, slot: int | None) -> None:
        port = free_port()
        super().__init__("intake", {**env, "PAYMENTS_INTAKE_METRICS_PORT": str(port)}, log_dir, port, slot=slot)

    async def handled(self) -> float:
        """Commands this replica answered or dead-lettered (payments_intake_messages_total)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in (await self.metrics()).splitlines()
                   if line.startswith("payments_intake_messages_total{"))


def _command(kind: str, cid: str, org: str, pid: str, data: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"specversion": "1.0", "id": cid, "source": "/billing/replicas", "type": PREFIX + kind,
                       "organizationid": org, "subject": pid, "data": data or {}}).encode()


class Stream:
    """The commands, per phase: part p's creates and updates, part p-1's completes, and
    re-sent copies of commands already sent (same CloudEvent id)."""

    def __init__(self, tag: str) -> None:
        self.part = PAYMENTS // PHASES
        self.orgs = [f"org-{tag}-{o}" for o in range(ORGS)]
        self.sent: set[tuple[str, str]] = set()  # (org, command id)
        self.partitions: set[int] = set()

    def payment(self, i: int) -> tuple[str, str]:
        return self.orgs[i % ORGS], f"pay-{i}"

    def expected(self, i: int) -> tuple[int, int, str]:
        """(version, amount, status) of payment ``i`` at the end."""
        updated, completed = i % 2 == 0, i % 3 == 0
        return 1 + updated + completed, (1000 if updated else 100) + i, "completed" if completed else "processing"

    def _commands(self, i: int, kinds: tuple[str, ...]) -> list[tuple[str, str, bytes]]:
        org, pid = self.payment(i)
        data = {"create": {"amount": 100 + i, "currency": ("EUR", "JPY")[i % 2]}, "update": {"amount": 1000 + i}}
        wanted = {"create": True, "update": i % 2 == 0, "complete": i % 3 == 0}
        return [(org, pid, _command(k, f"{k}-{pid}", org, pid, data.get(k))) for k in kinds if wanted[k]]

    def phase(self, p: int) -> list[tuple[str, str, bytes]]:
        ids = range(p * self.part, (p + 1) * self.part)
        records = [c for i in ids for c in self._commands(i, ("create", "update"))]
        for i in range(max(p - 1, 0) * self.part, (p + 1 if p == PHASES - 1 else p) * self.part):
            records += self._commands(i, ("complete",))
        first = self._commands(p * self.part, ("create",))
        records += first * 2  # a create re-sent twice, after its payment moved on
        if p:
            records += self._commands((p - 1) * self.part, ("update",))  # applied in the previous phase
        return records

    async def produce(self, producer: AIOKafkaProducer, topic: str, p: int, pause: float = 0.0) -> None:
        for org, pid, value in self.phase(p):
            await asyncio.sleep(pause)
            meta = await producer.send_and_wait(topic, value, key=pid.encode(),
                                                headers=[("content-type", b"application/cloudevents+json")])
            self.partitions.add(meta.partition)
            self.sent.add((org, json.loads(value)["id"]))


async def _read(settings: Settings, topic: str, done: Callable[[list[dict]], bool], timeout: float = 30) -> list[dict]:
    """``topic`` from the beginning, every partition, no group, until ``done``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                **consumer_options(settings))
    await consumer.start()
    seen: list[dict] = []
    try:
        consumer.assign(await topic_partitions(consumer, topic))
        await consumer.seek_to_beginning()
        async with asyncio.timeout(timeout):
            while not done(seen):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    seen += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return seen


async def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition of ``topic`` and its end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **consumer_options(settings))
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        assert partitions, f"no topic {topic}"
        return {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def test_two_intake_replicas_rebalance_and_lose_or_apply_twice_nothing(runtime: CommandRuntime,
                                                                              tmp_path: Path) -> None:
    base = runtime.settings
    settings, env = isolated(base, "replicas", database_url=base.database_url,
                             command_task_queue=base.command_task_queue, kafka_create_topics=True)
    stream = Stream(uuid.uuid4().hex[:6])

    def distinct(phases: int) -> int:
        """How many distinct commands the first ``phases`` parts hold (one outbox row each)."""
        return len({json.loads(v)["id"] for p in range(phases) for _, _, v in stream.phase(p)})

    async def rows() -> int:
        async with runtime.pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE organization_id = ANY($1)", stream.orgs)

    async def applied(phases: int) -> bool:
        return await rows() >= distinct(phases)

    first = IntakeProcess(env, tmp_path, slot=0)
    extra = IntakeProcess(env, tmp_path, slot=None)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    topic = settings.commands_topic
    try:
        first.start()
        await first.ready()  # it created the topics
        await stream.produce(producer, topic, 0)
        await eventually(lambda: applied(1), 60, "the first part, by one replica")

        extra.start()
        await extra.ready()
        await stream.produce(producer, topic, 1, pause=0.05)  # spread over the rebalance (a join takes ~3 s)

        async def extra_handles() -> bool:
            return await extra.handled() > 0

        await eventually(extra_handles, 60, "the extra replica handling its share (a rebalance)")

        await stream.produce(producer, topic, 2)

        async def third_part_started() -> bool:
            return await rows() > distinct(2)

        await eventually(third_part_started, 30, "the third part under way")
        assert first.kill() == -signal.SIGKILL  # slot 0 crashes mid-stream and comes back in its slot
        assert not await applied(3), "the third part was done before the kill: the test proves nothing"
        first.start()
        await first.ready()
        await eventually(lambda: applied(3), 60, "the first three parts, after the restart")

        stopping = time.monotonic()
        extra.stop()  # SIGTERM: stops for good, leaves the group
        assert extra.proc is not None and extra.proc.returncode == 0, extra.logs()
        assert time.monotonic() - stopping < 20, "the extra replica lingered after SIGTERM"
        await stream.produce(producer, topic, 3)  # every partition is the first replica's again
        await eventually(lambda: applied(PHASES), 60, "every command, by the remaining replica")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{first.logs()}\n{extra.logs()}") from None
    finally:
        await producer.stop()
        first.stop()
        extra.stop()

    assert stream.partitions == set(await _end_offsets(settings, topic)), "the stream did not cover every partition"
    await _assert_applied_once(runtime.pool, stream)

    wanted = {cid for _, cid in stream.sent}
    results = await _read(settings, settings.command_results_topic,
                          lambda seen: wanted <= {r["commandid"] for r in seen})
    by_id: dict[str, list[dict]] = {}
    for r in results:
        by_id.setdefault(r["commandid"], []).append(r)
    # docs/producers.md: a command's result may appear more than once (a redelivered or
    # re-sent command), always with the same id; it answers the command's one run.
    for cid in wanted:
        answers = {(r["id"], r["type"], r["subject"], r["data"]["version"]) for r in by_id[cid]}
        assert len(answers) == 1 and next(iter(answers))[1] == PREFIX + "succeeded", (cid, by_id[cid])
    assert sum((await _end_offsets(settings, settings.commands_dlq_topic)).values()) == 0  # nothing dead-lettered


async def _assert_applied_once(pool: asyncpg.Pool, stream: Stream) -> None:
    """Each payment at its expected version, amount and status, with exactly one outbox row
    per version 1..N; every command id claimed (once: the claim is the primary key)."""
    async with pool.acquire() as conn:
        payments = await conn.fetch("SELECT organization_id AS org, id, version, amount, status FROM payments"
                                    " WHERE organization_id = ANY($1)", stream.orgs)
        outbox = await conn.fetch("SELECT organization_id AS org, payment_id, payment_version FROM outbox"
                                  " WHERE organization_id = ANY($1)", stream.orgs)
        claimed = await conn.fetch("SELECT organization_id AS org, command_id FROM commands"
                                   " WHERE organization_id = ANY($1)", stream.orgs)
    expected = {stream.payment(i): stream.expected(i) for i in range(PAYMENTS)}
    assert {(p["org"], p["id"]): (p["version"], p["amount"], p["status"]) for p in payments} == expected
    versions: dict[tuple[str, str], list[int]] = {}
    for row in outbox:
        versions.setdefault((row["org"], row["payment_id"]), []).append(row["payment_version"])
    assert {k: sorted(v) for k, v in versions.items()} == {
        k: list(range(1, version + 1)) for k, (version, _, _) in expected.items()}
    assert stream.sent <= {(c["org"], c["command_id"]) for c in claimed}
