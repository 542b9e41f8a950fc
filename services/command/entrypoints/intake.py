"""``payments intake``: Kafka producers' commands, run by the same command service as the
HTTP API (consumer group ``PAYMENTS_INTAKE_GROUP`` on ``payments.commands``).

Per poll: the records are handled (entrypoints/intake_poll.py: a result or a dead letter
each), and only once every result and dead letter is acknowledged by Kafka are the
offsets committed: a crash re-delivers, and the re-run changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError

from services.command.adapters.kafka_producer import KafkaProducer
from services.command.bootstrap import Commands, command_runtime, ops_checks
from services.command.config import CommandSettings
from services.command.entrypoints.intake_poll import CommandIntake
from shared.kafka import (
    TopicMissing,
    command_topics,
    ensure_topics,
    group_consumer,
    partition_offsets,
    stop_clients,
)
from shared.ops import serving, until_stopped_or_done
from shared.telemetry import bind_log_context, log_context

log = logging.getLogger("payments.command.intake")


class IntakeConsumer:
    """The Kafka side: consumer group, producer, poll -> handle -> commit."""

    def __init__(self, commands: Commands, settings: CommandSettings) -> None:
        self.settings = settings
        self.kafka_ok = False
        self.handled = 0
        # Results and dead letters: acknowledged before the commands' offsets are committed.
        self._producer = KafkaProducer(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self.intake = CommandIntake(commands, self._producer.send, settings)

    async def start(self) -> None:
        s = self.settings
        while True:  # topics are the deployment's: wait for them (readiness says so meanwhile)
            try:
                await ensure_topics(s.kafka_bootstrap, command_topics(s), create=s.kafka_create_topics)
                break
            except TopicMissing as exc:
                log.warning("%s; retrying in 5 s", exc)
                await asyncio.sleep(5)
        await self._producer.start()
        self._consumer = group_consumer(
            s, s.commands_topic, group_id=s.intake_group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_interval_ms=s.intake_max_poll_interval_ms,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        await stop_clients(self._consumer)
        await self._producer.stop(timeout=10)

    async def poll_once(self, timeout_ms: int = 500) -> int:
        """Poll, handle and commit one batch; returns how many records it handled."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self.settings.intake_max_poll_records)
        self.kafka_ok = True
        records = [r for rs in batches.values() for r in rs]
        if not records:
            return 0
        try:
            await self.intake.handle(records)
        except BaseException:
            # Not all of them were answered: read them again (re-running the answered
            # ones is harmless), rather than moving past them until the next restart.
            for tp, first in partition_offsets(records, min, 0).items():
                self._consumer.seek(tp, first)
            raise
        try:
            await self._consumer.commit(partition_offsets(records))
        except CommitFailedError as exc:
            # A rebalance took the partition: its new owner re-runs these commands (harmless).
            log.warning("offset commit refused after a rebalance: %s", exc)
        self.handled += len(records)
        return len(records)

    async def run(self, stop: asyncio.Event) -> None:
        token = bind_log_context(component="intake", topic=self.settings.commands_topic)
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except Exception as exc:  # noqa: BLE001 - broker errors: the poll is read again after a pause
                    self.kafka_ok = not isinstance(exc, KafkaError)
                    log.warning("intake poll failed, reading it again: %r", exc)
                    await asyncio.sleep(self.settings.intake_retry_backoff_seconds)
        finally:
            log_context.reset(token)


async def run_intake(settings: CommandSettings) -> None:
    """``payments intake``: Kafka commands through the command service, one result each."""
    async with command_runtime(settings, embedded_worker=settings.intake_embedded_worker) as runtime:
        intake = IntakeConsumer(runtime.commands, settings)
        await intake.start()

        async def kafka() -> None:
            if not intake.kafka_ok:
                raise RuntimeError("no successful poll of the commands topic yet (broker unreachable?)")

        try:
            async with serving("payments command intake", settings.host, settings.intake_metrics_port,
                               {**ops_checks(runtime), "kafka": kafka}):
                stop = asyncio.Event()
                task = asyncio.create_task(intake.run(stop))
                log.info("intake consuming %s (group %s) on %s", settings.commands_topic, settings.intake_group,
                         settings.kafka_bootstrap)
                try:
                    await until_stopped_or_done(task)
                finally:
                    # Finish the poll in hand (its offsets commit only once its results are sent).
                    stop.set()
                    intake.intake.stopping = True
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await intake.stop()
        log.info("intake stopped", extra={"fields": {"handled": intake.handled}})
