"""shared.kafka.pace_empty_fetches: only a fetch that came back empty is followed by the
pause, and only for what is left of it."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest

from shared.kafka import pace_empty_fetches


def _response(*records: bytes | None) -> SimpleNamespace:
    # Fetch v4+ partition entries: (partition, error, highwater, lso, aborted, records)
    return SimpleNamespace(topics=[("t", [(i, 0, 10, 10, None, r) for i, r in enumerate(records)])])


def _consumer(response, delay: float = 0.0) -> SimpleNamespace:
    async def send(node_id, request, *args, **kwargs):
        await asyncio.sleep(delay)
        return response

    return SimpleNamespace(_client=SimpleNamespace(send=send))


async def _timed(consumer, request) -> float:
    started = time.monotonic()
    await consumer._client.send(0, request)
    return time.monotonic() - started


FETCH = FetchRequest(500, 1, 1 << 20, 0, [("t", [(0, 0, 1 << 20)])])


async def test_an_empty_fetch_is_followed_by_the_pause() -> None:
    consumer = _consumer(_response(None, b""))
    pace_empty_fetches(consumer, 0.1)
    assert await _timed(consumer, FETCH) >= 0.095


async def test_a_fetch_with_records_returns_at_once() -> None:
    consumer = _consumer(_response(None, b"\x00records"))
    pace_empty_fetches(consumer, 0.5)
    assert await _timed(consumer, FETCH) < 0.25


async def test_a_fetch_the_broker_held_is_not_paced_again() -> None:
    consumer = _consumer(_response(None), delay=0.2)  # Kafka holds an empty fetch: no extra pause
    pace_empty_fetches(consumer, 0.2)
    assert await _timed(consumer, FETCH) < 0.35


async def test_other_requests_and_a_zero_pause_are_untouched() -> None:
    consumer = _consumer(_response(None))
    pace_empty_fetches(consumer, 0.5)
    assert await _timed(consumer, MetadataRequest([])) < 0.25
    unpaced = _consumer(_response(None))
    send = unpaced._client.send
    pace_empty_fetches(unpaced, 0)
    assert unpaced._client.send is send
