"""The intake in process, on the real stack: a result Kafka refuses mid-poll, and batched creates."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY

from services.command.bootstrap import CommandRuntime
from services.command.commands import CommandState, CreatePayment, RejectionKind
from services.command.config import CommandSettings
from services.command.entrypoints.intake import IntakeConsumer
from shared.kafka import consumer_options
from shared.settings import Settings


async def _results(bootstrap: str, topic: str, wanted: set[str], timeout: float = 60.0) -> dict[str, list[dict]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"t-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **consumer_options(Settings()))  # the stack's (a stock broker refuses 2 s)
    await consumer.start()
    seen: dict[str, list[dict]] = {}
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= set(seen):
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for r in records:
                        event = json.loads(r.value)
                        seen.setdefault(event["commandid"], []).append(event)
    finally:
        await consumer.stop()
    return seen


def _intake_settings(base: CommandSettings, **overrides: object) -> CommandSettings:
    suffix = uuid.uuid4().hex[:8]
    return base.model_copy(update={
        "commands_topic": f"cmd.{suffix}", "command_results_topic": f"res.{suffix}",
        "commands_dlq_topic": f"dlq.{suffix}", "intake_group": f"intake-{suffix}",
        "intake_retry_backoff_seconds": 0.1, **overrides,
    })


def _command(kind: str, cid: str, org: str, pid: str, data: dict | None = None) -> bytes:
    return json.dumps({"specversion": "1.0", "id": cid, "source": "/t", "type": f"com.gyroscops.payment.command.{kind}",
                       "organizationid": org, "subject": pid, "data": data or {}}).encode()


async def _produce(settings: CommandSettings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.commands_topic, value, key=key)
    finally:
        await producer.stop()


async def test_batched_creates_keep_each_command_outcome_and_order(runtime: CommandRuntime,
                                                                  command_settings: CommandSettings) -> None:
    settings = _intake_settings(command_settings, intake_batch_creates=True)
    org = f"org-{uuid.uuid4().hex[:8]}"
    records = [(f"p{i}".encode(), _command("create", f"{org}-c{i}", org, f"{org}-p{i}", {"amount": 5 + i,
                                                                                          "currency": "EUR"}))
               for i in range(6)]
    records.append((b"p0", _command("complete", f"{org}-done", org, f"{org}-p0")))  # after p0's create
    records.append((b"bad", _command("create", f"{org}-bad", org, f"{org}-bad", {"amount": 1, "currency": "XYZ"})))
    records.append((b"p1", records[1][1]))  # p1's create again
    # A create of a payment that exists already, batched with the others: refused (id taken).
    await runtime.commands.process(CreatePayment(command_id=f"{org}-first", organization_id=org,
                                                payment_id=f"{org}-pre", amount=3, currency="EUR"))
    records.append((b"pre", _command("create", f"{org}-taken", org, f"{org}-pre", {"amount": 1, "currency": "EUR"})))
    await _produce(settings, records)
    bulk = {"type": "bulk_create", "outcome": "success"}
    bulks_before = REGISTRY.get_sample_value("payments_commands_total", bulk) or 0
    intake = IntakeConsumer(runtime.commands, settings)
    await intake.start()
    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    try:
        wanted = {f"{org}-c{i}" for i in range(6)} | {f"{org}-done", f"{org}-bad", f"{org}-taken"}
        seen = await _results(settings.kafka_bootstrap, settings.command_results_topic, wanted)
    finally:
        stop.set()
        await task
        await intake.stop()
    assert {seen[f"{org}-c{i}"][0]["data"]["amount"] for i in range(6)} == {5 + i for i in range(6)}
    assert seen[f"{org}-done"][0]["data"]["version"] == 2
    assert seen[f"{org}-bad"][0]["data"]["status"] == 422
    assert seen[f"{org}-taken"][0]["data"]["status"] == 409
    assert (REGISTRY.get_sample_value("payments_commands_total", bulk) or 0) > bulks_before  # it did batch
    # GET /v1/commands/{id} knows batched commands: successes and rejections alike.
    state, value = await runtime.commands.status(org, f"{org}-c3")
    assert (state, value.payment.id) == (CommandState.COMPLETED, f"{org}-p3")
    state, value = await runtime.commands.status(org, f"{org}-taken")
    assert (state, value.kind) == (CommandState.FAILED, RejectionKind.CONFLICT)
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, version FROM payments WHERE organization_id = $1 ORDER BY id", org)
    assert [(r["id"], r["version"]) for r in rows] == [(f"{org}-p0", 2)] + [(f"{org}-p{i}", 1) for i in range(1, 6)] + [
        (f"{org}-pre", 1)]


async def test_a_refused_result_reads_the_poll_again_and_loses_no_command(runtime: CommandRuntime,
                                                                          command_settings: CommandSettings) -> None:
    settings = _intake_settings(command_settings)
    suffix = settings.intake_group.removeprefix("intake-")
    intake = IntakeConsumer(runtime.commands, settings)
    await intake.start()
    send, refusals = intake.intake.publish, [KafkaTimeoutError()]

    async def flaky(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if topic == settings.command_results_topic and refusals:
            raise refusals.pop()
        await send(topic, key, value, headers)

    intake.intake.publish = flaky
    org = f"org-{suffix}"
    ids = [f"c{i}-{suffix}" for i in range(5)]
    await _produce(settings, [(f"p{i}".encode(), _command("create", cid, org, f"p{i}-{suffix}",
                                                          {"amount": 10 + i, "currency": "EUR"}))
                              for i, cid in enumerate(ids)])

    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    try:
        seen = await _results(settings.kafka_bootstrap, settings.command_results_topic, set(ids))
    finally:
        stop.set()
        await task
        await intake.stop()
    assert not refusals and set(ids) <= set(seen)
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT version FROM payments WHERE organization_id = $1", org)
    assert [r["version"] for r in rows] == [1] * 5
