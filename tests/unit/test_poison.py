"""Poison isolation: what MongoDB's errors say (services/query/adapters/mongo_errors.py) and
which event of a failing batch is set aside (services/query/poison.py)."""

from __future__ import annotations

import asyncio

from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge, OperationFailure, ServerSelectionTimeoutError

from services.query import poison
from services.query.adapters import mongo_errors
from services.query.poison import DeadLetterKind


def test_server_trouble_is_transient_and_data_trouble_is_not():
    for exc in (AutoReconnect("x"), ServerSelectionTimeoutError("x"), OperationFailure("conflict", code=112),
                OperationFailure("unauthorized", code=13),
                OperationFailure("x", code=2, details={"errorLabels": ["TransientTransactionError"]})):
        assert mongo_errors.is_transient(exc), exc
    for exc in (OverflowError("MongoDB can only handle up to 8-byte ints"), InvalidDocument("x"),
                DocumentTooLarge("x"), OperationFailure("bad value", code=2),
                BulkWriteError({"writeErrors": [{"index": 0, "code": 17280}]}), TypeError("bug"), KeyError("k")):
        assert not mongo_errors.is_transient(exc), exc
    assert mongo_errors.refusal(OverflowError("x")) is DeadLetterKind.REFUSED
    assert mongo_errors.refusal(DocumentTooLarge("x")) is DeadLetterKind.REFUSED
    assert mongo_errors.refusal(KeyError("k")) is DeadLetterKind.ERROR


@given(size=st.integers(1, 300), data=st.data())
def test_first_failing_finds_the_first_event_whose_prefix_fails(size, data):
    # An event may fail alone ("poison") or only after another one ("needs"): the prefix
    # search finds the first event at which applying the batch in order fails.
    poisoned = data.draw(st.sets(st.integers(0, size - 1), max_size=3))
    trials: list[int] = []

    async def fails(prefix):
        trials.append(len(prefix))
        bad = [i for i in prefix if i in poisoned]
        return ValueError(bad[0]) if bad else None

    found = asyncio.run(poison.first_failing(list(range(size)), fails))
    if not poisoned:
        assert found is None and trials == [size]
    else:
        index, error = found
        assert index == min(poisoned) and error.args == (min(poisoned),)
        assert len(trials) <= size.bit_length() + 2  # log2(n) trials, not n


def test_backoff_is_jittered_and_capped():
    delays = [poison.backoff(a) for a in range(1, 40) for _ in range(5)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 100


def test_apply_without_poison_sets_aside_each_poison_and_applies_the_rest_in_order():
    applied: list[list[int]] = []
    poisoned: list[tuple[int, str]] = []

    async def apply(items, dry_run):  # noqa: ANN001, ANN202
        bad = [i for i in items if i % 7 == 3]
        if bad:
            raise OverflowError(f"event {bad[0]}")
        if not dry_run:
            applied.append(list(items))
        return len(items)

    async def on_poison(item, error):  # noqa: ANN001, ANN202
        poisoned.append((item, str(error)))

    rest, result = asyncio.run(poison.apply_without_poison(list(range(20)), apply, on_poison, mongo_errors.is_transient))
    assert poisoned == [(3, "event 3"), (10, "event 10"), (17, "event 17")]
    assert rest == [i for i in range(20) if i % 7 != 3] and applied == [rest] and result == 17


def test_apply_without_poison_lets_transient_errors_through():
    async def apply(items, dry_run):  # noqa: ANN001, ANN202
        raise AutoReconnect("primary stepped down")

    async def on_poison(item, error):  # noqa: ANN001, ANN202
        raise AssertionError("a transient error is nobody's poison")

    try:
        asyncio.run(poison.apply_without_poison([1, 2], apply, on_poison, mongo_errors.is_transient))
    except AutoReconnect:
        pass
    else:
        raise AssertionError("the transient error must reach the caller")
