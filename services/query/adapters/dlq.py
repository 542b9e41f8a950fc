"""Dead-letter topics for operators (``payments dlq``): list and show the records with the
reasons their ``dlq-*`` headers carry, redrive them to their source topic in order
(counting redrives, so a record failing again is not redriven in a loop), purge old ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.dlq import REDRIVE_HEADER
from shared.kafka import topic_partitions


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int  # of the DLQ record
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace")
        return None

    @property
    def event(self) -> dict[str, Any]:
        try:
            value = json.loads(self.value)
        except (ValueError, UnicodeDecodeError):
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def id(self) -> str:
        event_id = self.event.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id
        return "#" + hashlib.blake2b((self.key or b"") + b"\0" + self.value, digest_size=8).hexdigest()

    @property
    def payment_id(self) -> str | None:
        subject = self.event.get("subject")
        if isinstance(subject, str):
            return subject
        return self.key.decode(errors="replace") if self.key else None

    @property
    def redrive_count(self) -> int:
        try:
            return int(self.header(REDRIVE_HEADER) or 0)
        except ValueError:
            return 0

    def summary(self) -> dict[str, Any]:
        return {
            "event_id": self.id, "payment_id": self.payment_id,
            "organization_id": self.event.get("organizationid"), "kind": self.header("dlq-kind"),
            "reason": self.header("dlq-reason"), "source_topic": self.header("dlq-source-topic"),
            "source_partition": _int(self.header("dlq-source-partition")),
            "source_offset": _int(self.header("dlq-source-offset")), "time": self.header("dlq-time"),
            "redrive_count": self.redrive_count, "dlq_partition": self.partition, "dlq_offset": self.offset,
        }

    def detail(self) -> dict[str, Any]:
        """Everything about the record: headers and the original bytes (text when UTF-8)."""
        try:
            value: Any = self.value.decode()
        except UnicodeDecodeError:
            value = {"hex": self.value.hex()}
        return {**self.summary(), "key": self.key.decode(errors="replace") if self.key else None,
                "headers": {k: v.decode(errors="replace") for k, v in self.headers}, "value": value}


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


# --------------------------------------------------------------------------- decisions (pure)


def latest(records: Iterable[DeadLetter]) -> list[DeadLetter]:
    """The newest DLQ record of each identity, in dead-letter order."""
    newest: dict[str, DeadLetter] = {}
    for record in records:
        newest[record.id] = record
    return sorted(newest.values(), key=lambda r: (r.timestamp_ms, r.partition, r.offset))


def select(records: Sequence[DeadLetter], *, event_ids: Sequence[str] = (), payment_ids: Sequence[str] = (),
           everything: bool = False, again: bool = False) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """``(to redrive, skipped because they already failed after a redrive)``."""
    wanted = [r for r in latest(records)
              if everything or r.id in event_ids or (r.payment_id is not None and r.payment_id in payment_ids)]
    skipped = [r for r in wanted if r.redrive_count > 0 and not again]
    return [r for r in wanted if r not in skipped], skipped


def redrive_headers(record: DeadLetter) -> list[tuple[str, bytes]]:
    """The producer's original headers, plus the incremented redrive count."""
    original = [(k, v) for k, v in record.headers if not k.startswith("dlq-")]
    return [*original, (REDRIVE_HEADER, str(record.redrive_count + 1).encode())]


# --------------------------------------------------------------------------- Kafka


async def read_all(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every record of ``topic`` present now (from the first retained offset to the end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[DeadLetter] = []
        remaining = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                records += [DeadLetter(m.partition, m.offset, m.timestamp, m.key, m.value or b"",
                                       tuple(m.headers or ())) for m in messages if m.offset < ends[tp]]
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return sorted(records, key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    finally:
        await consumer.stop()


async def redrive(bootstrap: str, records: Sequence[DeadLetter], default_topic: str,
                  progress: Any = None) -> int:
    """Re-produce ``records`` to their source topic, in order; returns how many."""
    # send_and_wait one at a time keeps the order without an idempotent producer
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for done, record in enumerate(records, 1):
            topic = record.header("dlq-source-topic") or default_topic
            await producer.send_and_wait(topic, record.value, key=record.key, headers=redrive_headers(record))
            if progress is not None:
                progress(done, record)
    finally:
        await producer.stop()
    return len(records)


async def purge(bootstrap: str, topic: str, before_ms: int) -> int:
    """Delete the DLQ records older than ``before_ms`` (epoch ms); returns how many.

    Kafka deletes only prefixes of a partition: each partition is cut at its first record
    at or after ``before_ms``.
    """
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    records = await read_all(bootstrap, topic)
    cut: dict[int, int] = {}
    count: dict[int, int] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.timestamp_ms < before_ms and cut.get(record.partition, record.offset) == record.offset:
            cut[record.partition] = record.offset + 1
            count[record.partition] = count.get(record.partition, 0) + 1
    if not cut:
        return 0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, p): RecordsToDelete(o) for p, o in cut.items()})
    finally:
        await admin.close()
    return sum(count.values())


def as_json(records: Iterable[DeadLetter]) -> str:
    return json.dumps([r.summary() for r in records], indent=2)

