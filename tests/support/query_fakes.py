"""In-memory adapters of the query side's ports (services/query/ports.py), for fast tests
of the query handlers and the projection, as tests/support/command_fakes.py is for the
command handlers.

``FakeReadModel`` holds payments and versions per organization; ``FakeCache`` caches
answers per organization epoch and can be down (then it bypasses); ``FakeSignal`` wakes the
waits of the payments ``committed`` names. ``FakeProjectionStore`` applies batches with the
real pure decisions (services/query/domain.py) to the reference read model of
tests/support/builders.py, and can refuse chosen events; ``FakeReaders`` records announces
and bumps and can fail them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from services.query.domain import Outcome, document_id
from services.query.history import history_document, history_page, payment_at
from services.query.poison import DeadLetterKind
from services.query.ports import AppliedBatch, Reflect
from services.query.queries import HistoryQuery, PaymentHistory, SearchQuery, SearchResult, Statistics, StatisticsQuery
from shared.events import PaymentEvent
from shared.payment import PaymentSnapshot
from shared.payment_view import Payment
from tests.support.builders import MemoryReadModel


class FakeReadModel:
    def __init__(self) -> None:
        self.payments: dict[tuple[str, str], Payment] = {}
        self.held: dict[tuple[str, str], int] = {}  # versions, deleted payments included
        self.looks = 0  # calls of versions(): what a read-your-writes wait costs the read model
        self.computed = 0  # answers computed (not from a cache)
        self.histories: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}  # version -> history document

    def project(self, snapshot: PaymentSnapshot) -> None:
        """What the projection commits for one payment."""
        key = (snapshot.organization_id, snapshot.id)
        self.held[key] = snapshot.version
        if snapshot.deleted_at is None:
            self.payments[key] = Payment.of(snapshot)
        else:
            self.payments.pop(key, None)

    def record(self, event: PaymentEvent) -> None:
        """What the projection commits for one event: its payment, and its history version."""
        self.project(event.payment)
        self.histories.setdefault((event.organizationid, event.subject), {}).setdefault(
            event.paymentversion, history_document(event))

    async def generation(self) -> str:
        return "g0"

    async def history(self, org: str, q: HistoryQuery) -> PaymentHistory | None:
        self.computed += 1
        held = self.histories.get((org, q.payment_id))
        if not held:
            return None
        after = q.starting_after or 0
        window = [held[v] for v in sorted(held) if v >= max(after, 1)][: q.limit + 2]
        return history_page(q.payment_id, window, after, q.limit)

    async def at_version(self, org: str, payment_id: str, version: int) -> tuple[Payment | None, int | None]:
        self.computed += 1
        held = self.histories.get((org, payment_id), {})
        return (payment_at(held[version]) if version in held else None), (max(held) if held else None)

    async def search(self, org: str, q: SearchQuery) -> SearchResult:
        self.computed += 1
        data = sorted((p for (o, _), p in self.payments.items() if o == org), key=lambda p: p.id)
        return SearchResult(data=data[: q.limit], total=len(data), has_more=len(data) > q.limit, next_cursor=None,
                            limit=q.limit)

    async def get(self, org: str, payment_id: str) -> Payment | None:
        self.computed += 1
        return self.payments.get((org, payment_id))

    async def versions(self, org: str, payment_ids: list[str]) -> dict[str, int]:
        self.looks += 1
        return {pid: self.held[(org, pid)] for pid in payment_ids if (org, pid) in self.held}

    async def statistics(self, org: str, q: StatisticsQuery) -> Statistics:
        self.computed += 1
        count = sum(1 for o, _ in self.payments if o == org)
        return Statistics(created_from=q.created_from, created_to=q.created_to, count=count, by_status={},
                          currencies=[])


class FakeCache:
    """Answers under (kind, organization, generation, epoch, query); an epoch bump hides
    every older answer of its organization, as the Redis cache's does."""

    def __init__(self) -> None:
        self.answers: dict[tuple[Any, ...], str] = {}
        self.epochs: dict[str, int] = {}
        self.marked: set[tuple[str, str]] = set()  # (organization, writes digest) known reflected
        self.down = False

    async def get_or_compute(self, kind: str, org: str, model_gen: str, query: BaseModel | str, model: type[Any],
                             compute: Callable[[], Awaitable[Any]], *, reflect: Reflect | None = None
                             ) -> tuple[Any, str]:
        if self.down:
            if reflect is not None:
                await reflect.wait()
            return await compute(), "bypass"
        if reflect is not None and (org, reflect.digest) not in self.marked:
            await reflect.wait()  # the writes are in the read model: answers cached before are not enough
            self.epochs[org] = self.epochs.get(org, 0) + 1
            self.marked.add((org, reflect.digest))
        text = query if isinstance(query, str) else query.model_dump_json()
        key = (kind, org, model_gen, self.epochs.get(org, 0), text)
        if key in self.answers:
            return model.model_validate_json(self.answers[key]), "hit"
        value = await compute()
        self.answers[key] = value.model_dump_json()
        return value, "miss"

    async def bump(self, orgs: set[str]) -> None:
        for org in orgs:
            self.epochs[org] = self.epochs.get(org, 0) + 1


class FakeSignal:
    def __init__(self, live: bool = True) -> None:
        self.live = live
        self._waiting: list[tuple[str, set[str], asyncio.Event]] = []

    @contextlib.asynccontextmanager
    async def watching(self, org: str, payment_ids: Iterable[str]) -> AsyncIterator[asyncio.Event]:
        entry = (org, set(payment_ids), asyncio.Event())
        self._waiting.append(entry)
        try:
            yield entry[2]
        finally:
            self._waiting.remove(entry)

    def committed(self, org: str, payment_ids: Iterable[str]) -> None:
        ids = set(payment_ids)
        for watched_org, watched, event in self._waiting:
            if watched_org == org and watched & ids:
                event.set()


# --------------------------------------------------------------------------- the projection


@dataclass
class FakeProjectionStore:
    model: MemoryReadModel = field(default_factory=MemoryReadModel)
    refuse: Callable[[PaymentEvent], BaseException | None] = lambda event: None  # an error to raise, or None
    transient_failures: list[BaseException] = field(default_factory=list)  # raised first, one per apply
    owed: set[str] = field(default_factory=set)  # organizations owing a bump (the store's record)
    applied: list[PaymentEvent] = field(default_factory=list)
    dry_runs: int = 0

    async def recover(self) -> set[str]:
        return set(self.owed)

    async def refresh(self) -> None:
        return None

    async def apply(self, events: Sequence[PaymentEvent], *, dry_run: bool = False) -> AppliedBatch:
        if self.transient_failures:
            raise self.transient_failures.pop(0)
        for event in events:
            if (error := self.refuse(event)) is not None:
                raise error
        if dry_run:
            self.dry_runs += 1
            return AppliedBatch([], set(), None)
        plan = self.model.apply(list(events))
        self.applied += [e for e, o in zip(events, plan.outcomes, strict=True) if o == Outcome.APPLIED]
        self.owed |= plan.organizations
        return AppliedBatch(plan.outcomes, plan.organizations, max((e.time for e in events), default=None))

    async def bumped(self, orgs: set[str]) -> None:
        self.owed -= orgs

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError | TimeoutError)  # the fake's outages

    @staticmethod
    def refusal(exc: BaseException) -> DeadLetterKind:
        return DeadLetterKind.REFUSED if isinstance(exc, ValueError) else DeadLetterKind.ERROR

    def holds(self, event: PaymentEvent) -> bool:
        return document_id(event.organizationid, event.subject) in self.model.payments


@dataclass
class FakeReaders:
    announced: list[tuple[str, str]] = field(default_factory=list)
    bumped: list[set[str]] = field(default_factory=list)
    failing: bool = False  # Redis away: bumps fail

    async def announce(self, applied: Iterable[tuple[str, str]]) -> None:
        self.announced += list(applied)

    async def bump(self, orgs: set[str]) -> None:
        if self.failing:
            raise ConnectionError("redis is away")
        self.bumped.append(set(orgs))


@dataclass
class FakeDeadLetters:
    records: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def __call__(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.records.append((key, value, dict(headers)))


@dataclass(frozen=True)
class Message:
    """A Kafka record as the projection reads it."""

    value: bytes | None
    offset: int
    key: bytes | None = None
    partition: int = 0
    topic: str = "payments.events"
    headers: tuple[tuple[str, bytes], ...] = ()


def messages(values: Sequence[bytes | None]) -> list[Message]:
    return [Message(value, offset, key=b"k") for offset, value in enumerate(values)]
