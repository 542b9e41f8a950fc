"""One payment followed through the real processes (issue 25): every long-running
``payments`` process exports OTLP traces to a receiver in the test (tests/support/
otlp_receiver.py) through the standard ``OTEL_*`` variables.

* a create over HTTP with an incoming ``traceparent`` reaches the command API, the command
  worker, the relay, the projector and a later read with its consistency token, in that
  trace (by parent, or by a link to it);
* a Kafka command's ``traceparent``, as a W3C header or as its CloudEvent attribute,
  continues into the intake's span, the command's spans and its result event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.events import CONTENT_TYPE
from shared.kafka import consumer_options
from shared.settings import Settings
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.systems import isolated_system
from tests.support.traces import Span, reached, trace_id_of, traceparent


@pytest.fixture(scope="module")
async def traced_system(settings: Settings, receiver: OtlpReceiver,
                        tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    # Only the command worker runs workflows: the trace must cross into its process.
    async with isolated_system(settings, "traces", tmp_path_factory.mktemp("traces-logs"), env=receiver.env(),
                               command_api_embedded_worker=False, intake_embedded_worker=False) as running:
        yield running.settings


async def _eventually(check: Callable[[list[Span]], None], receiver: OtlpReceiver, trace_id: str,
                      timeout: float = 30) -> None:
    """Until ``check`` passes on the spans that reach ``trace_id`` (each process exports
    its spans when they end, in batches), or fail with its last assertion."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check(reached(receiver.spans(), trace_id))
            return
        except (AssertionError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_a_create_is_followed_through_every_process(traced_system: Settings, receiver: OtlpReceiver) -> None:
    s = traced_system
    trace_id = uuid.uuid4().hex
    auth = {"Authorization": "Bearer " + mint_token("org-traces", [SCOPE_READ, SCOPE_WRITE], settings=s)}
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(f"http://127.0.0.1:{s.command_api_port}/v1/payments",
                                  json={"amount": 990, "currency": "EUR"},
                                  headers={**auth, "traceparent": traceparent(trace_id)})
        assert created.status_code == 201, created.text
        read = await http.get(f"http://127.0.0.1:{s.query_api_port}/v1/payments",
                              params={"consistent_with": created.headers["Consistency-Token"]},
                              headers={**auth, "traceparent": traceparent(trace_id, "a3ce929d0e0e4736")})
        assert read.status_code == 200 and read.json()["total"] == 1, read.text

    def followed(spans: list[Span]) -> None:
        by_service = {service: [x for x in spans if x.service == service] for service in {x.service for x in spans}}
        assert {"command-api", "command-worker", "relay", "projector", "query-api"} <= set(by_service), sorted(
            (x.service, x.name) for x in spans)
        assert any(x.name == "POST /v1/payments" and x.parent_id == "00f067aa0ba902b7"
                   for x in by_service["command-api"])
        assert {"RunWorkflow:CreatePayment", "RunActivity:payments.execute_create"} <= {
            x.name for x in by_service["command-worker"]}
        [send] = [x for x in by_service["relay"] if x.name.endswith(" send")]
        assert send.trace_id == trace_id  # by parent: the relay's hop continues the command's trace
        projected = [x for x in by_service["projector"] if x.name == "project"]
        assert projected and projected[0].attributes["payments.outcome"] == "applied"
        assert (trace_id, send.span_id) in projected[0].links  # by link: to the hop that delivered it
        assert any(x.parent_id == "a3ce929d0e0e4736" for x in by_service["query-api"])  # the later read

    await _eventually(followed, receiver, trace_id)


async def test_a_kafka_commands_traceparent_reaches_the_intake_and_its_result(
        traced_system: Settings, receiver: OtlpReceiver) -> None:
    s = traced_system
    # (organization, in a W3C header or as the CloudEvent attribute): the first two run
    # alone; the last two may run as one batched create (same organization, same poll).
    sent = {uuid.uuid4().hex: how for how in [("org-tr-a", "header"), ("org-tr-b", "attribute"),
                                               ("org-tr-c", "header"), ("org-tr-c", "attribute")]}
    commands = {trace_id: f"cmd-{uuid.uuid4().hex[:8]}" for trace_id in sent}
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for trace_id, (org, how) in sent.items():
            command: dict[str, Any] = {
                "specversion": "1.0", "id": commands[trace_id], "source": "/billing/tests", "organizationid": org,
                "type": "com.gyroscops.payment.command.create", "data": {"amount": 125, "currency": "EUR"}}
            headers = [("content-type", CONTENT_TYPE.encode())]
            if how == "header":
                headers.append(("traceparent", traceparent(trace_id).encode()))
            else:
                command["traceparent"] = traceparent(trace_id)
            await producer.send(s.commands_topic, json.dumps(command).encode(), key=commands[trace_id].encode(),
                                headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    results = await _results(s, set(commands.values()))
    producer_span = "00f067aa0ba902b7"
    for n, (trace_id, command_id) in enumerate(commands.items()):
        result, headers = results[command_id]
        assert result["type"].endswith(".succeeded"), result
        assert trace_id_of(result["traceparent"]) == trace_id  # the result event continues the command's trace
        assert [trace_id_of(v.decode()) for k, v in headers if k == "traceparent"] == [trace_id]

        def continued(spans: list[Span], trace_id: str = trace_id, n: int = n) -> None:
            assert {"intake", "command-worker", "relay"} <= {x.service for x in spans}
            intake = [x for x in spans if x.service == "intake"]
            alone = [x for x in intake if x.name == f"process {s.commands_topic}" and x.parent_id == producer_span]
            batched = [x for x in intake if (trace_id, producer_span) in x.links]
            assert alone if n < 2 else alone or batched, [(x.name, x.parent_id, x.links) for x in intake]

        await _eventually(continued, receiver, trace_id)


async def _results(s: Settings, command_ids: set[str]) -> dict[str, tuple[dict[str, Any], list[tuple[str, bytes]]]]:
    consumer = AIOKafkaConsumer(s.command_results_topic, bootstrap_servers=s.kafka_bootstrap,
                                group_id=f"test-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                enable_auto_commit=False, **consumer_options(s))
    await consumer.start()
    found: dict[str, tuple[dict[str, Any], list[tuple[str, bytes]]]] = {}
    try:
        async with asyncio.timeout(60):
            while not command_ids <= set(found):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = json.loads(record.value)
                        found[event["commandid"]] = (event, list(record.headers))
    finally:
        await consumer.stop()
    return found
