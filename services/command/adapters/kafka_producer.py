"""The command side's Kafka producer (aiokafka, options from the PAYMENTS_KAFKA_* settings):
every send waits for the broker's acknowledgement, so a caller commits its own progress
(an outbox row marked published, a command offset) only after Kafka holds the record."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.kafka import producer_options
from shared.settings import Settings

Headers = list[tuple[str, bytes]]


class KafkaProducer:
    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._options = {"bootstrap_servers": settings.kafka_bootstrap, **producer_options(settings), **overrides}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def stop(self, timeout: float | None = None) -> None:
        """Stop (within ``timeout`` seconds, errors ignored, when given)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if timeout is None:
            await producer.stop()
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """One record, acknowledged."""
        await self.acknowledged([await self.enqueue(topic, key, value, headers)])

    async def enqueue(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> asyncio.Future[Any]:
        """Hand one record to the producer; records enqueued in order keep their order (one
        partition per key). ``headers`` is this record's own list: the Kafka instrumentation
        appends this hop's ``traceparent`` to it, so a list shared by several records would
        carry every record's."""
        assert self._producer is not None, "start() first"
        return await self._producer.send(topic, value=value, key=key, headers=headers)

    async def acknowledged(self, pending: Sequence[asyncio.Future[Any]], timeout: float | None = None) -> None:
        """Wait until Kafka holds every enqueued record, within ``timeout`` seconds."""
        await asyncio.wait_for(asyncio.gather(*pending), timeout)
