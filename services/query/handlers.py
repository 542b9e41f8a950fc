"""Query handlers: search, get by id, statistics. One implementation, used by the HTTP
API and by the Temporal activities.

Every handler is scoped to an organization (from the caller's token, never from input)
and goes through the Redis cache; metrics ``payments_queries_total{kind,cache}`` and
``payments_query_duration_seconds{kind}`` are recorded here.
"""

from __future__ import annotations

import asyncio
import time

from services.query.cache import QueryCache
from services.query.models import PaymentView, SearchQuery, SearchResult, Statistics, StatisticsQuery
from services.query.read_model import ReadModel
from shared.telemetry import QUERIES, QUERY_DURATION

MAX_WAIT_SECONDS = 5.0  # bound of GET /v1/payments/{id}?min_version=N


class PaymentNotFound(LookupError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id!r} not found")
        self.payment_id = payment_id


class NotCaughtUp(TimeoutError):
    """The read model has not reached the requested version within the wait bound."""

    def __init__(self, payment_id: str, wanted: int, seen: int | None, waited: float) -> None:
        super().__init__(
            f"the read model has version {seen if seen is not None else 'none'} of payment {payment_id!r} "
            f"after waiting {waited:.1f}s; version {wanted} is not projected yet, retry later"
        )
        self.payment_id, self.wanted, self.seen, self.waited = payment_id, wanted, seen, waited


class QueryHandlers:
    def __init__(self, read_model: ReadModel, cache: QueryCache | None) -> None:
        self.read_model = read_model
        self.cache = cache

    async def _cached(self, kind, org, query, model, compute):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            if self.cache is None:
                value, outcome = await compute(), "bypass"
            else:
                generation = (await self.read_model.active()).generation
                value, outcome = await self.cache.get_or_compute(kind, org, generation, query, model, compute)
            QUERIES.labels(kind, outcome).inc()
            return value
        finally:
            QUERY_DURATION.labels(kind).observe(time.perf_counter() - started)

    async def search(self, org: str, query: SearchQuery) -> SearchResult:
        return await self._cached("search", org, query, SearchResult,
                                  lambda: self.read_model.search(org, query))

    async def statistics(self, org: str, query: StatisticsQuery) -> Statistics:
        return await self._cached("statistics", org, query, Statistics,
                                  lambda: self.read_model.statistics(org, query))

    async def get(self, org: str, payment_id: str, min_version: int | None = None,
                  max_wait: float = MAX_WAIT_SECONDS) -> PaymentView:
        """The payment, once the read model holds at least ``min_version`` of it.

        Raises :class:`PaymentNotFound` (unknown, deleted, or another organization's) or
        :class:`NotCaughtUp` when ``min_version`` is not reached within ``max_wait``.
        """
        try:
            view = await self._cached("get", org, payment_id, PaymentView,
                                      lambda: self._get_or_missing(org, payment_id))
        except PaymentNotFound:
            if min_version is None:
                raise
            return await self._wait_for(org, payment_id, min_version, max_wait)
        if min_version is None or view.version >= min_version:
            return view
        return await self._wait_for(org, payment_id, min_version, max_wait)

    async def _get_or_missing(self, org: str, payment_id: str) -> PaymentView:
        view = await self.read_model.get(org, payment_id)
        if view is None:
            raise PaymentNotFound(payment_id)
        return view

    async def _wait_for(self, org: str, payment_id: str, min_version: int, max_wait: float) -> PaymentView:
        """Poll MongoDB (bypassing the cache) with backoff 10 ms -> 200 ms until the
        version is there, the payment is deleted at that version, or ``max_wait`` ends."""
        started = time.monotonic()
        delay = 0.01
        while True:
            version = await self.read_model.version(org, payment_id)
            if version is not None and version >= min_version:
                return await self._get_or_missing(org, payment_id)
            waited = time.monotonic() - started
            if waited >= max_wait:
                raise NotCaughtUp(payment_id, min_version, version, waited)
            await asyncio.sleep(min(delay, max_wait - waited))
            delay = min(delay * 2, 0.2)

    async def get_or_none(self, org: str, payment_id: str) -> PaymentView | None:
        try:
            return await self.get(org, payment_id)
        except PaymentNotFound:
            return None
