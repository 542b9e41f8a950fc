"""The projection's dead-letter topic (the DeadLetter port) on Kafka: each record is sent
with the idempotent producer and acknowledged before the original's offset can be
committed."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from shared.kafka import producer_options, stop_clients
from shared.settings import Settings


class KafkaDeadLetters:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                          **producer_options(self.settings))
        await self._producer.start()

    async def stop(self) -> None:
        await stop_clients(self._producer)

    async def __call__(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        assert self._producer is not None, "start() first"
        delivery = await self._producer.send(self.settings.dlq_topic, value=value if value is not None else b"",
                                             key=key, headers=headers)
        await delivery
