"""When ``payments replay`` stops reading (services/query/entrypoints/replay.py): at the end
offsets it saw, not when records pause. A consumer stand-in pauses its records for longer
than the old 3 s idle end (what a leader election or a broker restart does on Kafka)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from aiokafka import TopicPartition

from services.query.domain import Outcome
from services.query.entrypoints.replay import _consume, _Progress

TP = TopicPartition("events", 0)


class PausingConsumer:
    """Five records now, a pause of ``pause`` seconds with empty fetches, five more."""

    def __init__(self, pause: float) -> None:
        self.offset = 0
        self.resumes = time.monotonic() + pause

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[SimpleNamespace]]:
        if self.offset == 5 and time.monotonic() < self.resumes:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = [SimpleNamespace(value=b"{not an event", offset=self.offset + i) for i in range(5)]
        self.offset += 5
        return {TP: batch}

    async def position(self, tp: TopicPartition) -> int:
        return self.offset


def _counts() -> dict[str, int]:
    return dict.fromkeys(Outcome, 0)


async def test_replay_reads_to_the_end_offsets_through_a_pause_of_the_records() -> None:
    counts = _counts()
    consumer = PausingConsumer(pause=3.5)
    await _consume(consumer, None, None, {TP: 10}, None, 100, _Progress(False, 10), counts)  # type: ignore[arg-type]
    assert counts[Outcome.INVALID] == 10  # every record read (none is an event: nothing reaches MongoDB)


async def test_with_idle_a_broker_with_wrong_end_offsets_still_finishes() -> None:
    counts = _counts()
    consumer = PausingConsumer(pause=60)
    started = time.monotonic()
    await _consume(consumer, None, None, {TP: 10**6}, 0.5, 100, _Progress(False, 0), counts)  # type: ignore[arg-type]
    assert counts[Outcome.INVALID] == 5 and time.monotonic() - started < 5
