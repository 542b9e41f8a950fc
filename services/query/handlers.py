"""Query handlers: search, get by id (now or as at a version), statistics, history. One implementation, used by the HTTP
API and by the Temporal activities.

Every handler is scoped to an organization (from the caller's token, never from input)
and goes through the Redis cache; metrics ``payments_queries_total{kind,cache}`` and
``payments_query_duration_seconds{kind}`` are recorded here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence

from services.query.ports import Cache, ReadModel, Reflect, Signal
from services.query.queries import (
    HistoryQuery,
    PaymentHistory,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsQuery,
)
from shared.consistency import ConsistencyTokens, Writes
from shared.payment_view import Payment
from shared.telemetry import QUERIES, QUERY_DURATION
from shared.tracing import exemplar, span

# A read-your-writes wait looks again after 10 ms, doubling up to 200 ms, unless the
# projection's signal wakes it first. While the signal is subscribed, it looks besides only
# every SIGNALLED_POLL seconds (for a signal lost with a Redis connection): every look
# costs the read model two queries per waiting read (docs/query-service.md).
POLL = (0.01, 0.2)
SIGNALLED_POLL = 1.0


class PaymentNotFound(LookupError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id!r} not found")
        self.payment_id = payment_id


class VersionNotFound(LookupError):
    """A version the payment's history does not hold: says which versions exist."""

    def __init__(self, payment_id: str, version: int, newest: int) -> None:
        super().__init__(f"payment {payment_id!r} has no version {version}; it has versions 1 to {newest}")
        self.payment_id, self.version, self.newest = payment_id, version, newest


class NotCaughtUp(TimeoutError):
    """The read model has not reached the requested versions within the wait bound.

    ``behind`` lists ``(payment id, wanted version, projected version or None)``;
    ``payment_id`` / ``wanted`` / ``seen`` are its first entry."""

    def __init__(self, behind: Sequence[tuple[str, int, int | None]], waited: float) -> None:
        self.behind = [tuple(b) for b in behind]
        self.payment_id, self.wanted, self.seen = self.behind[0]
        self.waited = waited
        more = f" (and {len(self.behind) - 1} more payments)" if len(self.behind) > 1 else ""
        super().__init__(
            f"the read model has version {self.seen if self.seen is not None else 'none'} of payment "
            f"{self.payment_id!r} after waiting {waited:.1f}s; version {self.wanted} is not projected yet{more}, "
            "retry later"
        )


class QueryHandlers:
    def __init__(self, read_model: ReadModel, cache: Cache | None,
                 tokens: ConsistencyTokens | None = None, *, max_wait: float,
                 signal: Signal | None = None, poll: tuple[float, float] = POLL) -> None:
        self.read_model = read_model
        self.cache = cache
        self.tokens = tokens
        self.max_wait = max_wait  # bound of every read-your-writes wait (PAYMENTS_READ_WAIT_SECONDS)
        self.signal = signal  # wakes the waits when the projector commits
        self.poll = poll

    def _writes(self, org: str, consistent_with: Sequence[str]) -> Writes | None:
        """The writes the answer must reflect. Raises InvalidConsistencyToken (400) or
        ForeignConsistencyToken (404)."""
        if not consistent_with:
            return None
        if self.tokens is None:
            raise RuntimeError("consistency tokens need QueryHandlers(tokens=...)")
        return self.tokens.required(consistent_with, org)

    async def _cached(self, kind, org, query, model, compute, writes: Writes | None = None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            reflect = None if writes is None else Reflect(writes.digest(),
                                                           lambda: self.wait_for(org, dict(writes.versions)))
            if self.cache is None:
                if reflect is not None:
                    await reflect.wait()
                value, outcome = await compute(), "bypass"
            else:
                generation = await self.read_model.generation()
                value, outcome = await self.cache.get_or_compute(kind, org, generation, query, model, compute,
                                                                 reflect=reflect)
            QUERIES.labels(kind, outcome).inc()
            return value
        finally:
            QUERY_DURATION.labels(kind).observe(time.perf_counter() - started, exemplar())

    async def search(self, org: str, query: SearchQuery, consistent_with: Sequence[str] = ()) -> SearchResult:
        """With ``consistent_with`` (consistency tokens of command results), answered only
        once the read model reflects those writes (bounded wait, else :class:`NotCaughtUp`)."""
        return await self._cached("search", org, query, SearchResult,
                                  lambda: self.read_model.search(org, query), self._writes(org, consistent_with))

    async def statistics(self, org: str, query: StatisticsQuery, consistent_with: Sequence[str] = ()) -> Statistics:
        return await self._cached("statistics", org, query, Statistics,
                                  lambda: self.read_model.statistics(org, query), self._writes(org, consistent_with))

    async def get(self, org: str, payment_id: str, min_version: int | None = None,
                  max_wait: float | None = None, consistent_with: Sequence[str] = ()) -> Payment:
        """The payment, once the read model holds at least ``min_version`` of it and
        reflects the writes of ``consistent_with``.

        Raises :class:`PaymentNotFound` (unknown, deleted, or another organization's) or
        :class:`NotCaughtUp` when ``min_version`` is not reached within ``max_wait``.
        """
        writes = self._writes(org, consistent_with)
        try:
            view = await self._cached("get", org, payment_id, Payment,
                                      lambda: self._get_or_missing(org, payment_id), writes)
        except PaymentNotFound:
            if min_version is None:
                raise
            return await self._wait_for(org, payment_id, min_version, max_wait)
        if min_version is None or view.version >= min_version:
            return view
        return await self._wait_for(org, payment_id, min_version, max_wait)

    async def history(self, org: str, query: HistoryQuery, consistent_with: Sequence[str] = ()) -> PaymentHistory:
        """A page of the payment's history, oldest first; :class:`PaymentNotFound` if the
        organization has no such payment (a deleted one keeps its history)."""
        async def compute() -> PaymentHistory:
            page = await self.read_model.history(org, query)
            if page is None:
                raise PaymentNotFound(query.payment_id)
            return page

        return await self._cached("history", org, query, PaymentHistory, compute, self._writes(org, consistent_with))

    async def get_as_of(self, org: str, payment_id: str, version: int, consistent_with: Sequence[str] = ()) -> Payment:
        """The payment as it was at ``version`` (from its history: a deleted payment's
        versions too). :class:`VersionNotFound` beyond the newest version held,
        :class:`PaymentNotFound` if the organization has no such payment."""
        async def compute() -> Payment:
            view, newest = await self.read_model.at_version(org, payment_id, version)
            if newest is None:
                raise PaymentNotFound(payment_id)
            if view is None:
                raise VersionNotFound(payment_id, version, newest)
            return view

        return await self._cached("get_as_of", org, f"{payment_id}@{version}", Payment, compute,
                                  self._writes(org, consistent_with))

    async def _get_or_missing(self, org: str, payment_id: str) -> Payment:
        view = await self.read_model.get(org, payment_id)
        if view is None:
            raise PaymentNotFound(payment_id)
        return view

    async def _wait_for(self, org: str, payment_id: str, min_version: int, max_wait: float | None) -> Payment:
        await self.wait_for(org, {payment_id: min_version}, max_wait)
        return await self._get_or_missing(org, payment_id)

    async def wait_for(self, org: str, wanted: Mapping[str, int], max_wait: float | None = None) -> None:
        """Look in MongoDB (bypassing the cache) until it holds every payment of ``wanted``
        at that version or newer (a tombstone counts), or raise :class:`NotCaughtUp` when
        ``max_wait`` (default: this handler's bound) ends. It looks again as soon as the
        projector signals a commit of one of these payments (adapters/projected_signal.py),
        and besides every :data:`SIGNALLED_POLL` seconds while the signal is subscribed, or
        with the backoff of :data:`POLL` while it is not."""
        max_wait = self.max_wait if max_wait is None else max_wait
        started = time.monotonic()
        delay, cap = self.poll
        ids = list(wanted)
        watching = self.signal.watching(org, ids) if self.signal is not None else contextlib.nullcontext(None)
        # In a trace, the time a read spent waiting for the projector (NotCaughtUp: its error).
        with span("read-your-writes wait", **{"payments.payments": len(ids)}):
            async with watching as projected:
                while True:
                    if projected is not None:
                        projected.clear()  # before the look: a commit from now on wakes the next wait
                    have = await self.read_model.versions(org, ids)
                    behind = [(pid, v, have.get(pid)) for pid, v in wanted.items() if have.get(pid, 0) < v]
                    if not behind:
                        return
                    waited = time.monotonic() - started
                    if waited >= max_wait:
                        raise NotCaughtUp(behind, waited)
                    if projected is None:
                        await asyncio.sleep(min(delay, max_wait - waited))
                    else:
                        assert self.signal is not None
                        pause = max(delay, SIGNALLED_POLL) if self.signal.live else delay
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(projected.wait(), min(pause, max_wait - waited))
                    delay = min(delay * 2, cap)

    async def get_or_none(self, org: str, payment_id: str, consistent_with: Sequence[str] = ()) -> Payment | None:
        try:
            return await self.get(org, payment_id, consistent_with=consistent_with)
        except PaymentNotFound:
            return None
