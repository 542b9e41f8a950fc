"""Helpers shared by the benchmarks: timing, percentiles, settings with a scratch database."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.settings import Settings


def kafka_env(settings: Settings) -> dict[str, str]:
    """``settings``' Kafka client settings (bootstrap included) as PAYMENTS_KAFKA_* variables, for
    a process started on another broker than the stack.json one."""
    values = {name: getattr(settings, name) for name in Settings.model_fields if name.startswith("kafka_")}
    return {f"PAYMENTS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in values.items() if v is not None}


def scratch_settings(**overrides: object) -> Settings:
    """Settings from the environment, with a fresh MongoDB database (and Redis prefix)."""
    return Settings(**{"mongo_db": f"bench_{uuid.uuid4().hex[:8]}", **overrides})


@contextlib.asynccontextmanager
async def scratch_database(url: str, prefix: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database on the server of ``url`` (its URL), dropped afterwards."""
    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{database}"))
    finally:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def latencies(fn: Callable[[], Awaitable[object]], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"{name:<38} p50 {q[49]:7.3f} ms   p99 {q[98]:7.3f} ms   (n={len(ms)})"


def medians(steps: list[dict]) -> list[dict]:
    """One row per (variant, concurrency): the median of its rounds, metric by metric."""
    rows: dict[tuple[str, int], list[dict]] = {}
    for step in steps:
        rows.setdefault((step["variant"], step["c"]), []).append(step)
    out = []
    for (variant, concurrency), runs in rows.items():
        row: dict = {"variant": variant, "c": concurrency, "errors": sum(r["errors"] for r in runs)}
        for key in ("tput", "p50", "p99"):
            row[key] = statistics.median(r[key] for r in runs)
        row["cpu"] = {k: statistics.median(r["cpu"][k] for r in runs) for k in runs[0]["cpu"]}
        out.append(row)
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"
