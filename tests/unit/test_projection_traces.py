"""The projection's spans (issue 25), on in-memory ports and the SDK's in-memory exporter:
one span per event around the real work (apply, announce, bump), linked to the event's
own context (its CloudEvent ``traceparent``) and to the hop that delivered it (the
record's W3C header), inside a batch span of its own trace whose children are the work."""

from __future__ import annotations

import asyncio
import time
import uuid

from services.query.projection import Projection
from shared.events import EventType, new_event
from tests.support.builders import snapshot
from tests.support.query_fakes import FakeDeadLetters, FakeProjectionStore, FakeReaders, Message
from tests.support.traces import in_memory_tracing, of_sdk, traceparent

SOURCE = "/payments/command"


def _record(offset: int, payment_id: str, trace_id: str, hop_trace_id: str | None = None) -> Message:
    event = new_event(EventType.CREATED, snapshot(payment_id), source=SOURCE, trace={"traceparent": traceparent(trace_id)})
    headers = (("traceparent", traceparent(hop_trace_id, "b7ad6b7169203331").encode()),) if hop_trace_id else ()
    return Message(event.to_json_bytes(), offset, key=payment_id.encode(), headers=headers)


async def test_each_event_gets_a_span_linked_to_its_own_context() -> None:
    traces = [uuid.uuid4().hex for _ in range(3)]
    records = [_record(0, "p0", traces[0], traces[0]), _record(1, "p1", traces[1]), _record(2, "p0", traces[2])]
    store, readers = FakeProjectionStore(), FakeReaders()
    bumped_at = []
    bump = readers.bump

    async def timed_bump(orgs: set[str]) -> None:
        await bump(orgs)
        bumped_at.append(time.time_ns())

    readers.bump = timed_bump  # type: ignore[method-assign]
    with in_memory_tracing() as exporter:
        await Projection(store, readers, FakeDeadLetters(), group="g", trusted_sources={SOURCE}).handle(records)
        spans = [of_sdk(s) for s in exporter.get_finished_spans()]
    [batch] = [s for s in spans if s.name == "project batch"]
    assert batch.parent_id is None and batch.trace_id not in traces  # no one event's trace is the batch's
    per_event = [s for s in spans if s.name == "project"]
    assert [s.parent_id for s in per_event] == [batch.span_id] * 3
    assert [s.attributes["payments.payment_id"] for s in per_event] == ["p0", "p1", "p0"]
    assert [s.attributes["payments.outcome"] for s in per_event] == ["applied", "applied", "duplicate"]
    # Linked to the event's context; the first also to the relay's hop that delivered it.
    assert per_event[0].links == ((traces[0], "00f067aa0ba902b7"), (traces[0], "b7ad6b7169203331"))
    assert [s.links for s in per_event[1:]] == [((traces[1], "00f067aa0ba902b7"),), ((traces[2], "00f067aa0ba902b7"),)]
    # Around the real work: the events' spans cover the apply, the announce and the bump.
    assert readers.announced and store.applied and bumped_at
    assert all(batch.start <= s.start and s.end >= bumped_at[-1] for s in per_event)


async def test_the_same_event_twice_in_a_batch_is_two_messages_traced_or_not() -> None:
    """A redelivered event (same id, another offset) is its own message: one span each."""
    record = _record(0, "p9", uuid.uuid4().hex)
    again = Message(record.value, 1, key=record.key)
    store = FakeProjectionStore()
    # handle() retries a failing batch for ever (the projector stalls): bound the wait.
    await asyncio.wait_for(Projection(store, FakeReaders(), FakeDeadLetters(), group="g", trusted_sources={SOURCE})
                           .handle([record, again]), 10)
    with in_memory_tracing() as exporter:
        await asyncio.wait_for(Projection(FakeProjectionStore(), FakeReaders(), FakeDeadLetters(), group="g",
                                          trusted_sources={SOURCE}).handle([record, again]), 10)
        outcomes = [s.attributes["payments.outcome"] for s in map(of_sdk, exporter.get_finished_spans())
                    if s.name == "project"]
    assert [e.subject for e in store.applied] == ["p9"] and outcomes == ["applied", "duplicate"]
