"""The fault campaign's checks: PostgreSQL, the outbox, the read model, the statistics, the
cache and the dead-letter topic agree once the pipeline has drained (bench/faults.py)."""


from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from bench.fault_load import ORGS, ClientLog
from services.query.adapters.read_model import MongoReadModel
from shared.auth import SCOPE_READ, cursor_key, mint_token
from shared.kafka import topic_partitions
from shared.settings import Settings

# --------------------------------------------------------------------------- the checks


async def _postgres_state(url: str) -> tuple[dict[tuple[str, str], asyncpg.Record], list[str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT organization_id, id, amount, currency, status, version, deleted_at"
                                " FROM payments")
        gaps = await conn.fetch(
            "SELECT p.id, p.version, count(o.*) AS events, count(o.published_at) AS published,"
            " coalesce(max(o.payment_version), 0) AS newest"
            " FROM payments p LEFT JOIN outbox o ON o.organization_id = p.organization_id AND o.payment_id = p.id"
            " GROUP BY p.organization_id, p.id, p.version"
            " HAVING count(o.*) <> p.version OR count(o.published_at) <> p.version"
            " OR coalesce(max(o.payment_version), 0) <> p.version")
    finally:
        await conn.close()
    problems = [f"outbox of {g['id']}: version {g['version']}, {g['events']} events, {g['published']} published"
                for g in gaps]
    return {(r["organization_id"], r["id"]): r for r in rows}, problems


async def _read_model_state(mongo: AsyncMongoClient, settings: Settings) -> tuple[
        dict[tuple[str, str], dict[str, Any]], set[tuple[str, str]], dict[str, dict[str, int]]]:
    """(live payments, tombstones, statistics buckets) of the active generation."""
    cols = await MongoReadModel(mongo[settings.mongo_db], cursor_key(settings)).active(fresh=True)
    docs = {(d["organization_id"], d["id"]): d async for d in cols.payments.find({})}
    tombs = {(d["organization_id"], d["id"]) async for d in cols.tombstones.find({})}
    stats = {d["_id"]: {k: d[k] for k in ("count", "sum", "min", "max")} async for d in cols.statistics.find({})}
    return docs, tombs, stats


def _recount(docs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for d in docs.values():
        key = f"{d['organization_id']}|{d['day']}|{d['currency']}|{d['status']}"
        b = out.setdefault(key, {"count": 0, "sum": 0, "min": d["amount"], "max": d["amount"]})
        b["count"] += 1
        b["sum"] += d["amount"]
        b["min"] = min(b["min"], d["amount"])
        b["max"] = max(b["max"], d["amount"])
    return out


async def _dlq_records(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        batches = await consumer.getmany(timeout_ms=2000)
        return sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()


async def _cached_answers(settings: Settings, docs: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Search totals and statistics counts as the query API serves them (through Redis)."""
    problems = []
    base = f"http://127.0.0.1:{settings.query_api_port}/v1"
    async with httpx.AsyncClient(timeout=10) as http:
        for org in ORGS:
            auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ], settings=settings)}
            expected = sum(1 for (o, _) in docs if o == org)
            for _ in range(2):  # the second answer comes from the cache
                total = (await http.get(f"{base}/payments", headers=auth)).json()["total"]
                count = (await http.get(f"{base}/statistics", headers=auth)).json()["count"]
                if total != expected or count != expected:
                    problems.append(f"{org}: query API says total {total}, statistics {count}; MongoDB has {expected}")
    return problems


async def check(settings: Settings, log: ClientLog) -> list[str]:
    """Every invariant of the module docstring; returns the violations (empty: all good)."""
    rows, problems = await _postgres_state(settings.database_url)
    for key, version in log.acked.items():
        row = rows.get(key)
        if row is None or row["version"] < version:
            problems.append(f"acknowledged {key} v{version} but PostgreSQL has {row and row['version']}")
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    try:
        docs, tombs, stats = await _read_model_state(mongo, settings)
        for key, row in rows.items():
            if row["deleted_at"] is not None:
                if key not in tombs or key in docs:
                    problems.append(f"deleted {key} is not a tombstone in the read model")
                continue
            doc = docs.get(key)
            if doc is None:
                problems.append(f"{key} v{row['version']} missing from the read model")
            elif (doc["version"], doc["status"], doc["amount"]) != (row["version"], row["status"], row["amount"]):
                problems.append(f"{key}: read model v{doc['version']} {doc['status']}, PostgreSQL v{row['version']} "
                                f"{row['status']}")
        problems += [f"{key} in the read model, not in PostgreSQL" for key in set(docs) - set(rows)]
        if stats != _recount(docs):
            problems.append("statistics differ from a recount of the read model")
        problems += await _cached_answers(settings, docs)
    finally:
        await mongo.close()
    for topic in (settings.dlq_topic, settings.commands_dlq_topic):
        dead = await _dlq_records(settings, topic)
        if dead:
            problems.append(f"{dead} records in the dead-letter topic {topic}")
    return problems


async def converge(settings: Settings, log: ClientLog, timeout: float) -> tuple[list[str], float]:
    """Check until clean (the pipeline drains) or ``timeout``; returns the last problems and the time."""
    started = time.monotonic()
    while True:
        problems = await check(settings, log)
        if not problems or time.monotonic() - started > timeout:
            return problems, time.monotonic() - started
        await asyncio.sleep(1.0)


