"""Poison isolation decisions (services/query/poison.py): what is retried, which event is set aside."""

from __future__ import annotations

import asyncio

from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect, BulkWriteError, DocumentTooLarge, OperationFailure, ServerSelectionTimeoutError

from services.query import poison


def test_server_trouble_is_transient_and_data_trouble_is_not():
    for exc in (AutoReconnect("x"), ServerSelectionTimeoutError("x"), OperationFailure("conflict", code=112),
                OperationFailure("unauthorized", code=13),
                OperationFailure("x", code=2, details={"errorLabels": ["TransientTransactionError"]})):
        assert poison.is_transient(exc), exc
    for exc in (OverflowError("MongoDB can only handle up to 8-byte ints"), InvalidDocument("x"),
                DocumentTooLarge("x"), OperationFailure("bad value", code=2),
                BulkWriteError({"writeErrors": [{"index": 0, "code": 17280}]}), TypeError("bug"), KeyError("k")):
        assert not poison.is_transient(exc), exc
    assert poison.reason_class(OverflowError("x")) == poison.REFUSED
    assert poison.reason_class(DocumentTooLarge("x")) == poison.REFUSED
    assert poison.reason_class(KeyError("k")) == poison.ERROR


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
