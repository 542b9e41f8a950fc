"""The query side's ports: what the query handlers and the projection need, said as
protocols. services/query/adapters/ implements them on MongoDB and Redis,
tests/support/query_fakes.py in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel

from services.query.poison import DeadLetterKind
from services.query.queries import HistoryQuery, PaymentHistory, SearchQuery, SearchResult, Statistics, StatisticsQuery
from shared.events import PaymentEvent
from shared.payment_view import Payment

M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------- reads


class ReadModel(Protocol):
    """The read model as the query handlers read it, one organization at a time."""

    async def generation(self) -> str:
        """The active generation of the collections (a replay switches it; cache keys carry it)."""

    async def search(self, org: str, q: SearchQuery) -> SearchResult: ...

    async def get(self, org: str, payment_id: str) -> Payment | None: ...

    async def versions(self, org: str, payment_ids: list[str]) -> dict[str, int]:
        """The versions held of these payments, live or deleted; unknown ones are absent."""

    async def statistics(self, org: str, q: StatisticsQuery) -> Statistics: ...

    async def history(self, org: str, q: HistoryQuery) -> PaymentHistory | None:
        """A page of the payment's history (deleted payments keep theirs); None if this
        organization has no such payment."""

    async def at_version(self, org: str, payment_id: str, version: int) -> tuple[Payment | None, int | None]:
        """The payment as at ``version`` (None if its history lacks it), and the newest
        version its history holds (None: no such payment in this organization)."""


@dataclass(frozen=True)
class Reflect:
    """Writes an answer must reflect: their digest, and a wait until the read model holds
    them (raises NotCaughtUp when the bound passes; the cache never catches that)."""

    digest: str
    wait: Callable[[], Awaitable[None]]


class Cache(Protocol):
    """Answers cached per organization, generation and epoch."""

    async def get_or_compute(self, kind: str, org: str, model_gen: str, query: BaseModel | str, model: type[M],
                             compute: Callable[[], Awaitable[M]], *, reflect: Reflect | None = None) -> tuple[M, str]:
        """``(answer, "hit" | "miss" | "bypass")``; "bypass": the cache was unusable. With
        ``reflect``, the answer reflects those writes."""


class Signal(Protocol):
    """Wakes the reads waiting for payments the projection just committed."""

    live: bool  # subscribed: a commit reaches the waits, so they need not poll often

    def watching(self, org: str, payment_ids: Iterable[str]) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever one of these payments was committed (clear it before each look)."""


# --------------------------------------------------------------------------- the projection


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What one applied batch did: an outcome per event, the organizations it changed,
    and the time of its newest applied event (for the lag metric)."""

    outcomes: list[str]
    organizations: set[str]
    newest_event_time: datetime | None


class ProjectionStore(Protocol):
    """The read model as the projection writes it: one transaction per batch."""

    async def recover(self) -> set[str]:
        """Abort the transactions a killed predecessor left open; the organizations whose
        cache epoch it still owed a bump."""

    async def refresh(self) -> None:
        """Find where the next batch goes (the active generation). What it raises is no
        event's fault."""

    async def apply(self, events: Sequence[PaymentEvent], *, dry_run: bool = False) -> AppliedBatch:
        """Apply in one transaction, recording the changed organizations as owing a bump;
        ``dry_run`` aborts it after writing (it raises what a real apply would)."""

    async def bumped(self, orgs: set[str]) -> None:
        """Forget the bumps these organizations owed (their epochs moved)."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same batch may succeed (nothing wrong with its events)."""

    def refusal(self, exc: BaseException) -> DeadLetterKind:
        """Why the store would not take an event that made a batch fail."""


class Readers(Protocol):
    """What the projection tells readers once a batch is committed."""

    async def announce(self, applied: Iterable[tuple[str, str]]) -> None:
        """Wake the reads waiting for these (organization, payment id) writes; best effort."""

    async def bump(self, orgs: set[str]) -> None:
        """Move these organizations' cache epochs: no answer cached before is served again."""


# Send a record to the dead-letter topic and wait for the broker's ack: (key, value, headers).
DeadLetter = Callable[[bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[None]]
