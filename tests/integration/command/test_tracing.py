"""Traces of commands in process (issue 25), with the SDK's in-memory exporter: a create
over HTTP is one trace (HTTP, workflow, activity, PostgreSQL spans, in that order) whose
context its outbox row keeps; a group-committed burst runs in a batch span of its own
trace, linked to each command's span, and each command's event keeps its own context;
the relay gives each record its own W3C header, the hop that continues its event's trace.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.command import handlers
from services.command.bootstrap import command_runtime
from services.command.commands import CreatePayment
from services.command.config import CommandSettings
from services.command.entrypoints.http.app import create_app
from services.command.entrypoints.relay import OutboxRelay
from shared.auth import SCOPE_WRITE, mint_token
from shared.kafka import consumer_options
from tests.support.traces import ancestry, in_memory_tracing, in_trace, of_sdk, trace_id_of, traceparent


@pytest.fixture(scope="module")
async def traced(command_settings: CommandSettings) -> AsyncIterator[Any]:
    """A command runtime and API built while tracing is on (its own task queue, so the
    session's untraced worker never takes its tasks), and the exporter of its spans."""
    settings = command_settings.model_copy(
        update={"command_task_queue": f"{command_settings.command_task_queue}-traced"})
    with in_memory_tracing() as exporter:
        async with command_runtime(settings, embedded_worker=True) as runtime:
            transport = httpx.ASGITransport(app=create_app(runtime=runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://command.test", timeout=30) as http:
                http.headers["Authorization"] = "Bearer " + mint_token("org-trace", [SCOPE_WRITE], settings=settings)
                yield http, exporter, runtime


async def _outbox_traceparent(runtime: Any, payment_id: str) -> str | None:
    async with runtime.pool.acquire() as conn:
        payload = await conn.fetchval("SELECT payload FROM outbox WHERE payment_id = $1", payment_id)
    return json.loads(payload).get("traceparent")


async def test_a_create_is_one_trace_from_http_to_postgres(traced: Any) -> None:
    http, exporter, runtime = traced
    trace_id = uuid.uuid4().hex
    created = await http.post("/v1/payments", json={"amount": 1250, "currency": "EUR"},
                              headers={"traceparent": traceparent(trace_id)})
    assert created.status_code == 201, created.text
    spans = [of_sdk(s) for s in exporter.get_finished_spans()]
    mine = in_trace(spans, trace_id)
    insert = next(s for s in mine if s.name.startswith("INSERT") and "payments" in str(s.attributes))
    chain = list(reversed(ancestry(insert, mine)))
    # The incoming traceparent is the HTTP span's parent; then Temporal's client, workflow
    # and activity spans (the interceptor hangs the workflow's spans under its start);
    # PostgreSQL's statement inside the activity.
    assert chain[0].name == "POST /v1/payments" and chain[0].parent_id == "00f067aa0ba902b7", chain
    names = [s.name for s in chain]
    temporal = ["StartWorkflow:CreatePayment", "StartActivity:payments.execute_create",
                "RunActivity:payments.execute_create"]
    assert [n for n in names if n in temporal] == temporal and names[-1] == insert.name, names
    start = next(s for s in chain if s.name == temporal[0])
    [workflow] = [s for s in mine if s.name == "RunWorkflow:CreatePayment"]
    assert workflow.parent_id == start.span_id
    in_order = [chain[0], start, workflow, *(s for s in chain if s.name in temporal[1:]), insert]
    assert [s.start for s in in_order] == sorted(s.start for s in in_order), [s.name for s in in_order]
    # The outbox row keeps the command's context, for the relay and the projector.
    stored = await _outbox_traceparent(runtime, created.json()["id"])
    assert stored is not None and trace_id_of(stored) == trace_id


async def test_a_group_committed_burst_links_the_batch_to_each_command(traced: Any) -> None:
    http, exporter, runtime = traced
    exporter.clear()
    traces = [uuid.uuid4().hex for _ in range(8)]
    answers = await asyncio.gather(*(
        http.post("/v1/payments", json={"amount": 100 + i, "currency": "EUR"}, headers={"traceparent": traceparent(t)})
        for i, t in enumerate(traces)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    spans = [of_sdk(s) for s in exporter.get_finished_spans()]
    batches = [s for s in spans if s.name == "group commit"]
    assert batches, "the burst ran no batch"
    for batch in batches:
        # A trace of its own: no command's trace is its parent...
        assert batch.parent_id is None and batch.trace_id not in traces
        # ... and one link per command it ran, to that command's span.
        assert len(batch.links) == batch.attributes["payments.batch.size"]
        assert {t for t, _ in batch.links} <= set(traces)
    linked = [t for batch in batches for t, _ in batch.links]
    assert len(linked) == len(set(linked)), "a command linked twice"
    # Every command's event keeps its own request's context, batched or not.
    for trace_id, answer in zip(traces, answers, strict=True):
        stored = await _outbox_traceparent(runtime, answer.json()["id"])
        assert stored is not None and trace_id_of(stored) == trace_id


async def test_each_relayed_record_carries_exactly_its_own_traceparent(traced: Any) -> None:
    """One relay batch of several events: each record's W3C header is its own hop (the
    relay's send span, a child of its event's context), never another record's."""
    _, exporter, runtime = traced
    settings = runtime.settings.model_copy(update={"events_topic": f"payments.events.traced-{uuid.uuid4().hex[:8]}"})
    traces = {uuid.uuid4().hex: f"relay-{uuid.uuid4().hex[:10]}" for _ in range(5)}
    for trace_id, payment_id in traces.items():
        await handlers.create(runtime.store, CreatePayment(
            command_id=f"create-{payment_id}", organization_id="org-trace", payment_id=payment_id, amount=100,
            currency="EUR", traceparent=traceparent(trace_id)), source=settings.event_source)
    relay = OutboxRelay(runtime.pool, settings)
    try:
        while await relay.publish_batch():  # the five rows go in one batch (and whatever else waits)
            pass
    finally:
        await relay.close()
    records = await _records(settings, set(traces.values()))
    sends = {s.span_id: s for s in map(of_sdk, exporter.get_finished_spans()) if s.name.endswith(" send")}
    for trace_id, payment_id in traces.items():
        record = records[payment_id]
        hops = [value.decode() for key, value in record.headers if key == "traceparent"]
        assert len(hops) == 1, f"{payment_id}: {hops}"
        hop = hops[0].split("-")
        assert hop[1] == trace_id  # the event's trace continues...
        send = sends[hop[2]]  # ... through the relay's span for this record, whose parent is the event's context
        assert (send.trace_id, send.parent_id) == (trace_id, "00f067aa0ba902b7")
        assert json.loads(record.value)["traceparent"] == traceparent(trace_id)  # the original context, unchanged


async def _records(settings: CommandSettings, payment_ids: set[str]) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(settings.events_topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"test-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                enable_auto_commit=False, **consumer_options(settings))
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            while not payment_ids <= set(found):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.update({r.key.decode(): r for r in records})
    finally:
        await consumer.stop()
    return found
