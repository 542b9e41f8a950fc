"""The intake in process, on the real stack, when Kafka refuses a result mid-poll."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from services.command.bootstrap import CommandRuntime
from services.command.config import CommandSettings
from services.command.intake import IntakeConsumer


async def _results(bootstrap: str, topic: str, wanted: set[str], timeout: float = 60.0) -> set[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"t-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", session_timeout_ms=2000, heartbeat_interval_ms=500,
                                enable_auto_commit=False)
    await consumer.start()
    seen: set[str] = set()
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= seen:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    seen |= {json.loads(r.value)["commandid"] for r in records}
    finally:
        await consumer.stop()
    return seen


async def test_a_refused_result_reads_the_poll_again_and_loses_no_command(runtime: CommandRuntime,
                                                                          command_settings: CommandSettings) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = command_settings.model_copy(update={
        "commands_topic": f"cmd.{suffix}", "command_results_topic": f"res.{suffix}",
        "commands_dlq_topic": f"dlq.{suffix}", "intake_group": f"intake-{suffix}",
        "intake_session_timeout_ms": 2000, "intake_heartbeat_interval_ms": 500, "intake_fetch_max_wait_ms": 25,
        "intake_retry_backoff_seconds": 0.1,
    })
    intake = IntakeConsumer(runtime.service, settings)
    await intake.start()
    send, refusals = intake.intake.publish, [KafkaTimeoutError()]

    async def flaky(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if topic == settings.command_results_topic and refusals:
            raise refusals.pop()
        await send(topic, key, value, headers)

    intake.intake.publish = flaky
    org = f"org-{suffix}"
    ids = [f"c{i}-{suffix}" for i in range(5)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    for i, cid in enumerate(ids):
        value = {"specversion": "1.0", "id": cid, "source": "/t", "type": "com.gyroscops.payment.command.create",
                 "organizationid": org, "subject": f"p{i}-{suffix}", "data": {"amount": 10 + i, "currency": "EUR"}}
        await producer.send_and_wait(settings.commands_topic, json.dumps(value).encode(), key=f"p{i}".encode())
    await producer.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(intake.run(stop))
    try:
        seen = await _results(settings.kafka_bootstrap, settings.command_results_topic, set(ids))
    finally:
        stop.set()
        await task
        await intake.stop()
    assert not refusals and set(ids) <= seen
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch("SELECT version FROM payments WHERE organization_id = $1", org)
    assert [r["version"] for r in rows] == [1] * 5
