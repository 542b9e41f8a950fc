"""Helpers of the query tests on the real stack: seed the read model with the projector's
own write path, read it back, write an event by hand as a foreign producer would, read a
topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer

from services.query.adapters.batch_writes import apply_batch
from services.query.domain import BucketKey
from shared.events import EventType, new_event
from shared.kafka import consumer_options
from shared.settings import Settings
from tests.support.builders import snapshot
from tests.support.children import eventually


async def seed(runtime, payments):  # noqa: ANN001, ANN201
    """Project creation events directly (the projector's own write path)."""
    cols = await runtime.read_model.active(fresh=True)
    await apply_batch(runtime.mongo, cols, [new_event(EventType.CREATED, p) for p in payments])


def payments_of(org: str, n: int, **kw) -> list:  # noqa: ANN003
    base = snapshot("x").created_at
    return [snapshot(f"{org}-{i:03d}", org, amount=100 + (i * 37) % 500, created_at=base + timedelta(minutes=i),
                     user_id=f"u{i % 3}", **kw) for i in range(n)]


def raw_event(pid: str, org: str = "org-x", *, version: int = 1, amount: int = 4200, currency: str = "EUR",
              type_: str = "com.gyroscops.payment.created", status: str = "processing") -> dict:
    """An event written by hand, as any producer following the contract would."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "/payments/command", "type": type_,
        "subject": pid, "time": now, "organizationid": org, "paymentversion": version,
        "datacontenttype": "application/json",
        "data": {"payment": {"id": pid, "organization_id": org, "user_id": "u-1", "amount": amount,
                             "currency": currency, "status": status, "description": "from elsewhere",
                             "metadata": {}, "version": version, "created_at": now, "updated_at": now},
                 "changes": {}},
    }


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"t-{uuid.uuid4().hex[:8]}",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **consumer_options(Settings()))  # the stack's, exported as PAYMENTS_*
    await consumer.start()
    records: list = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=300)
            records.extend(r for rs in batch.values() for r in rs)
            return len(records) >= expected

        await eventually(enough, timeout, f"{expected} records on {topic}")
    finally:
        await consumer.stop()
    return records


async def statistics_from_mongo(runtime) -> dict:  # noqa: ANN001
    cols = await runtime.read_model.active(fresh=True)
    return {BucketKey(b["organization_id"], b["day"], b["currency"], b["status"]):
            {k: b.get(k, 0) for k in ("count", "sum", "min", "max", "refunded")} async for b in cols.statistics.find()}


async def payments_from_mongo(runtime) -> list:  # noqa: ANN001
    cols = await runtime.read_model.active(fresh=True)
    return [snapshot(d["id"], d["organization_id"], amount=d["amount"], currency=d["currency"],
                     status=d["status"], version=d["version"], created_at=d["created_at"],
                     amount_refunded=d.get("amount_refunded", 0))
            async for d in cols.payments.find()]
