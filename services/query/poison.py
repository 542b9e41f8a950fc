"""Which event of a failing batch is the poison: the search for it, pure (the trial apply
and the store's judgement of its errors are passed in). A batch hit by something
transient is retried whole; one event the read model refuses is set aside
(dead-lettered) and the batch applied without it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DeadLetterKind(StrEnum):
    """Why an event was dead-lettered: the ``dlq-kind`` header and the ``reason`` label of
    payments_projection_dead_letters_total (bounded, so safe as a label)."""

    INVALID = "invalid"  # it breaks the event contract (parse_event refused it)
    REFUSED = "refused"  # the read model refused it (a data error of the store)
    ERROR = "error"  # an unexpected exception while applying it (a bug-like failure)


def describe(kind: DeadLetterKind, exc: BaseException) -> str:
    """The ``dlq-reason`` of an event set aside."""
    return f"{kind}: {type(exc).__name__}: {exc}"[:1000]


async def first_failing(items: Sequence[T], fails: Callable[[Sequence[T]], Awaitable[BaseException | None]]
                        ) -> tuple[int, BaseException] | None:
    """Index of the event that makes ``items`` fail, and its error; ``None`` if the whole
    batch no longer fails.

    Binary search for the shortest failing prefix: ``fails(prefix)`` applies the prefix
    in an aborted transaction, so an event that is refused only after the events before
    it (same payment, same statistics bucket) is found too. log2(n) trials.
    """
    error = await fails(items)
    if error is None:
        return None
    low, high = 0, len(items)  # items[:low] applies; items[:high] fails
    while high - low > 1:
        middle = (low + high) // 2
        failure = await fails(items[:middle])
        if failure is None:
            low = middle
        else:
            high, error = middle, failure
    return high - 1, error


async def apply_without_poison(
    items: list[T], apply: Callable[[list[T], bool], Awaitable[R]],
    on_poison: Callable[[T, BaseException], Awaitable[None]], is_transient: Callable[[BaseException], bool],
) -> tuple[list[T], R | None]:
    """Apply ``items`` (``apply(items, dry_run)``); each event that makes it fail for a
    reason ``is_transient`` denies goes to ``on_poison`` and the rest is applied again.
    Returns the items applied and ``apply``'s result (``None`` if nothing was left).
    Transient errors propagate (the caller retries them)."""
    items = list(items)

    async def fails(prefix: Sequence[T]) -> BaseException | None:
        if not prefix:
            return None
        try:
            await apply(list(prefix), True)
        except Exception as exc:
            if is_transient(exc):
                raise
            return exc
        return None

    while items:
        try:
            return items, await apply(items, False)
        except Exception as exc:
            if is_transient(exc):
                raise
            found = await first_failing(items, fails)
            if found is not None:  # else it did not fail again: apply the batch as it is
                index, error = found
                await on_poison(items.pop(index), error)
    return items, None


def backoff(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff (seconds) before retry ``attempt`` (1, 2, ...): replicas
    retrying against the same recovering MongoDB do not retry in lockstep."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 20)))  # noqa: S311 - not crypto
