"""Poison-event isolation: which failures to retry, and which event of a batch to set aside.

A batch that fails to apply is either hit by something transient (MongoDB away, a
write conflict, a primary election): retried as a whole, with backoff; or by one event
the read model refuses (a value BSON cannot hold, a document too large, a bug in our
code on an odd input): that event is found, dead-lettered, and the batch re-applied
without it. Pure decisions, no I/O (the trial apply is passed in).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

T = TypeVar("T")
R = TypeVar("R")

# Reason classes: the ``reason`` label of payments_projection_dead_letters_total and the
# ``dlq-kind`` header. Bounded, so safe as a metric label.
INVALID = "invalid"  # the event breaks the contract (parse_event refused it)
REFUSED = "refused"  # the read model refused it (BSON / MongoDB data error)
ERROR = "error"  # an unexpected exception while applying it (a bug-like failure)
REASONS = (INVALID, REFUSED, ERROR)

_TRANSIENT_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult", "RetryableWriteError")
# Server codes that say something about the server, not about the event: retried (and,
# if they last, the projector reports itself stalled) rather than dead-lettering every
# event of the batch one after the other.
_SERVER_CODES = frozenset({
    6, 7, 89, 202, 9001,  # host unreachable, host not found, network timeouts, socket error
    24, 112, 251, 262, 50,  # lock timeout, WriteConflict, NoSuchTransaction, time limits
    91, 189, 10107, 11600, 11601, 11602, 13435, 13436,  # shutdown, step-down, not primary, interrupted
    43, 133,  # cursor lost, no server for the read preference
    13, 14031,  # Unauthorized, OutOfDiskSpace: an operator's problem, never an event's
    20, 263,  # transactions not supported by this deployment / this operation
})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch may succeed (nothing wrong with its events)."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    if isinstance(exc, PyMongoError) and any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    if isinstance(exc, OperationFailure):
        codes = {exc.code}
        details = exc.details or {}
        codes |= {e.get("code") for e in details.get("writeErrors", ()) if isinstance(e, dict)}
        if (details.get("writeConcernError") or {}).get("code") is not None:
            return True
        return bool(codes & _SERVER_CODES)
    return False


def reason_class(exc: BaseException) -> str:
    """``refused`` for data errors of the driver or server, ``error`` for anything else."""
    from bson.errors import BSONError

    if isinstance(exc, PyMongoError | BSONError | OverflowError | UnicodeError):
        return REFUSED
    return ERROR


def describe(exc: BaseException) -> str:
    return f"{reason_class(exc)}: {type(exc).__name__}: {exc}"[:1000]


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
    on_poison: Callable[[T, BaseException], Awaitable[None]],
) -> tuple[list[T], R | None]:
    """Apply ``items`` (``apply(items, dry_run)``); each event that makes it fail for a
    non-transient reason goes to ``on_poison`` and the rest is applied again. Returns the
    items applied and ``apply``'s result (``None`` if nothing was left). Transient errors
    propagate (the caller retries them)."""
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
