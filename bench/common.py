"""Helpers shared by the benchmarks: timing, percentiles, settings with a scratch database."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from shared.settings import Settings


def scratch_settings(**overrides: object) -> Settings:
    """Settings from the environment, with a fresh MongoDB database (and Redis prefix)."""
    return Settings(**{"mongo_db": f"bench_{uuid.uuid4().hex[:8]}", **overrides})


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
