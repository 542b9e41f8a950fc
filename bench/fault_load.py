"""The fault campaign's clients: bounded command load through the command API, each command
with an Idempotency-Key, retried on 5xx, 202 and transport errors as a careful client would;
and creates sent as Kafka commands to the intake, as another system would (bench/faults.py)."""


from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.auth import SCOPE_WRITE, mint_token
from shared.kafka import producer_options
from shared.settings import Settings

ORGS = ("org-a", "org-b", "org-c", "org-d")
TRANSITIONS = ("complete", "cancel", "fail")


# --------------------------------------------------------------------------- the clients


@dataclass
class ClientLog:
    """What the clients saw, and what was acknowledged to them."""

    statuses: Counter[str] = field(default_factory=Counter)
    acked: dict[tuple[str, str], int] = field(default_factory=dict)  # (org, payment id) -> version
    processing: dict[str, list[str]] = field(default_factory=dict)  # org -> payment ids to transition
    quiet: set[str] = field(default_factory=set)  # organizations the load leaves alone from now on

    def ack(self, org: str, payment: dict[str, Any]) -> None:
        key = (org, payment["id"])
        self.acked[key] = max(self.acked.get(key, 0), int(payment["version"]))


async def send(http: httpx.AsyncClient, log: ClientLog, method: str, url: str, org: str,
                headers: dict[str, str], body: Any, deadline: float) -> dict[str, Any] | None:
    """One command, retried with its Idempotency-Key until acknowledged or refused."""
    key = uuid.uuid4().hex
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            resp = await http.request(method, url, json=body, headers={**headers, "Idempotency-Key": key})
            log.statuses[str(resp.status_code)] += 1
            if resp.status_code in (200, 201):
                payment = resp.json()
                log.ack(org, payment)
                return payment
            if 400 <= resp.status_code < 500 and resp.status_code != 409:
                return None  # refused on purpose (e.g. a transition that lost a race)
            if resp.status_code == 409 and "idempotency" not in resp.text:
                return None
        except httpx.HTTPError as exc:
            log.statuses[type(exc).__name__] += 1
        await asyncio.sleep(delay + random.random() * delay)  # 202, 5xx, 409 in flight, no answer
        delay = min(delay * 2, 2.0)
    return None


async def run_load(settings: Settings, log: ClientLog, stop: asyncio.Event, rate: float) -> None:
    base = f"http://127.0.0.1:{settings.command_api_port}/v1/payments"
    auth = {org: {"Authorization": "Bearer " + mint_token(org, [SCOPE_WRITE], settings=settings)} for org in ORGS}
    rng = random.Random(7)
    pending: set[asyncio.Task[Any]] = set()
    async with httpx.AsyncClient(timeout=20) as http:
        i = 0
        begin = time.monotonic()
        while not stop.is_set():
            org = ORGS[i % len(ORGS)]
            if org in log.quiet:
                i += 1
                continue
            todo = log.processing.setdefault(org, [])
            deadline = time.monotonic() + 120
            if todo and rng.random() < 0.4:
                pid = todo.pop(rng.randrange(len(todo)))
                action = rng.choice(TRANSITIONS)
                coro = send(http, log, "POST", f"{base}/{pid}/{action}", org, auth[org], None, deadline)
            else:
                body = {"amount": rng.randint(1, 10_000), "currency": rng.choice(("EUR", "USD", "JPY"))}

                async def create(org: str = org, body: dict[str, Any] = body, deadline: float = deadline) -> None:
                    made = await send(http, log, "POST", base, org, auth[org], body, deadline)
                    if made is not None:
                        log.processing.setdefault(org, []).append(made["id"])

                coro = create()
            task = asyncio.create_task(coro)
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))  # open loop
        if pending:
            await asyncio.gather(*pending)




def create_command(org: str, payment_id: str, amount: int) -> bytes:
    """A create command as a Kafka producer of another system sends it (docs/producers.md)."""
    return json.dumps({"specversion": "1.0", "id": f"cmd-{payment_id}", "source": "/billing/faults",
                       "type": "com.gyroscops.payment.command.create", "organizationid": org, "subject": payment_id,
                       "data": {"amount": amount, "currency": "EUR"}}).encode()


async def run_intake_load(settings: Settings, log: ClientLog, stop: asyncio.Event, rate: float) -> None:
    """Creates through the intake at ``rate`` per second; one the broker acknowledged counts
    as acknowledged (version 1) and must end in PostgreSQL. A send that failed (the broker
    restarting) is sent again, same command id."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000,
                                **producer_options(settings))
    await producer.start()
    rng = random.Random(11)
    try:
        i = 0
        while not stop.is_set():
            org = ORGS[i % len(ORGS)]
            i += 1
            if org in log.quiet:
                continue
            payment_id = f"k-{uuid.uuid4().hex[:12]}"
            value = create_command(org, payment_id, rng.randint(1, 10_000))
            while not stop.is_set():
                try:
                    await producer.send_and_wait(settings.commands_topic, value, key=payment_id.encode())
                    log.statuses["kafka:acked"] += 1
                    log.acked[(org, payment_id)] = max(log.acked.get((org, payment_id), 0), 1)
                    break
                except KafkaError as exc:
                    log.statuses[f"kafka:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.5)
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()
