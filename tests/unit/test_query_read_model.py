"""Pure query building of the read model: filters, sort, keyset cursors, statistics folding."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.query.adapters.cache import answer_key, digest
from services.query.adapters.cursors import InvalidCursor, decode_cursor, encode_cursor
from services.query.adapters.read_model import choose_index
from services.query.adapters.read_queries import (
    average,
    keyset_filter,
    search_filter,
    sort_spec,
    statistics_filter,
    summarize,
)
from services.query.queries import SearchQuery, StatisticsQuery

T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = datetime(2026, 3, 2, tzinfo=UTC)


def test_search_filter_is_scoped_to_the_organization_and_maps_every_filter():
    q = SearchQuery(status="completed", currency="EUR", min_amount=10, max_amount=20, created_from=T0,
                    created_to=T1, user_id="u1")
    assert search_filter("org-a", q) == {
        "organization_id": "org-a", "status": "completed", "currency": "EUR", "user_id": "u1",
        "amount": {"$gte": 10, "$lt": 21}, "created_at": {"$gte": T0, "$lt": T1},
    }
    assert search_filter("org-b", SearchQuery()) == {"organization_id": "org-b"}


def test_sort_is_keyed_on_the_field_then_id_in_the_same_direction():
    assert sort_spec(SearchQuery(sort="-amount")) == [("amount", -1), ("_id", -1)]
    assert sort_spec(SearchQuery(sort="status")) == [("status", 1), ("_id", 1)]


@pytest.mark.parametrize("bad", [{"sort": "description"}, {"currency": "XXX"}, {"currency": "eur"}, {"currency": ""},
                                 {"limit": 0}, {"limit": 101},
                                 {"created_from": datetime(2026, 3, 1)}])
def test_invalid_search_queries_are_rejected(bad):  # noqa: ANN001
    with pytest.raises(ValidationError):
        SearchQuery(**bad)


KEY = b"unit-test-cursor-key"


@given(st.sampled_from(["created_at", "-created_at", "amount", "-amount", "status", "-status"]),
       st.text(min_size=1, max_size=20), st.integers(0, 10**15), st.datetimes(timezones=st.just(UTC)))
def test_cursors_round_trip(sort, pid, amount, created):  # noqa: ANN001
    q = SearchQuery(sort=sort)
    doc = {"_id": pid, "amount": amount, "created_at": created, "status": "failed"}
    assert decode_cursor(KEY, "o", q, encode_cursor(KEY, "o", q, doc)) == (doc[q.sort_field], pid)


def test_a_cursor_is_bound_to_its_search_and_garbage_is_refused():
    doc = {"_id": "p1", "amount": 5, "created_at": T0, "status": "failed"}
    q = SearchQuery(sort="amount", currency="EUR", min_amount=1)
    cursor = encode_cursor(KEY, "o", q, doc)
    assert decode_cursor(KEY, "o", q.model_copy(update={"limit": 5}), cursor) == (5, "p1")  # page size may change
    for other in (q.model_copy(update={"sort": "-amount"}), q.model_copy(update={"currency": "USD"}),
                  q.model_copy(update={"min_amount": None}), q.model_copy(update={"status": "failed"})):
        with pytest.raises(InvalidCursor, match="another search"):
            decode_cursor(KEY, "o", other, cursor)
    with pytest.raises(InvalidCursor, match="another search"):
        decode_cursor(KEY, "another-org", q, cursor)
    for garbage in ("p1", "c2.!!!", "c2.", cursor + "x", cursor.replace("c2.", "c2.e", 1)):
        with pytest.raises(InvalidCursor):
            decode_cursor(KEY, "o", q, garbage)
    with pytest.raises(InvalidCursor):
        decode_cursor(b"another key", "o", q, cursor)


@given(st.text(max_size=200))
def test_no_cursor_but_a_signed_one_is_accepted(forged):  # noqa: ANN001
    with pytest.raises(InvalidCursor):
        decode_cursor(KEY, "o", SearchQuery(), "c2." + forged)


def test_keyset_filter_breaks_ties_on_id():
    assert keyset_filter(SearchQuery(sort="-amount"), (5, "p1")) == {
        "$or": [{"amount": {"$lt": 5}}, {"amount": 5, "_id": {"$lt": "p1"}}]}
    assert keyset_filter(SearchQuery(sort="created_at"), (T0, "p1")) == {
        "$or": [{"created_at": {"$gt": T0}}, {"created_at": T0, "_id": {"$gt": "p1"}}]}


def test_index_choice_covers_every_sort_and_equality_filter():
    assert choose_index({"organization_id": "o"}, "created_at") == "org_created"
    assert choose_index({"organization_id": "o", "status": "x"}, "created_at") == "org_status_created"
    assert choose_index({"organization_id": "o", "user_id": "u"}, "created_at") == "org_user_created"
    assert choose_index({"organization_id": "o", "currency": "EUR"}, "created_at") == "org_currency_created"
    assert choose_index({"organization_id": "o", "status": "x"}, "amount") == "org_amount"
    assert choose_index({"organization_id": "o"}, "status") == "org_status"


def test_average_rounds_half_even_in_minor_units():
    assert [average(5, 2), average(7, 2), average(10, 3), average(10**15 * 3 + 1, 3)] == [2, 4, 3, 10**15]


def _bucket(day: str, currency: str, status: str, amounts: list[int]) -> dict:
    return {"organization_id": "o", "day": day, "currency": currency, "status": status,
            "count": len(amounts), "sum": sum(amounts), "min": min(amounts), "max": max(amounts)}


def test_summarize_folds_buckets_per_currency_status_and_day():
    buckets = [_bucket("2026-03-01", "EUR", "completed", [100, 300]), _bucket("2026-03-02", "EUR", "completed", [50]),
               _bucket("2026-03-02", "EUR", "failed", [1000]), _bucket("2026-03-01", "JPY", "completed", [7])]
    stats = summarize(StatisticsQuery(), buckets)
    assert stats.count == 5 and stats.by_status == {"completed": 4, "failed": 1}
    eur, jpy = stats.currencies
    assert (eur.currency, eur.count, eur.sum, eur.min, eur.max, eur.avg) == ("EUR", 4, 1450, 50, 1000, 362)
    assert [(s.status, s.count, s.sum) for s in eur.by_status] == [("completed", 3, 450), ("failed", 1, 1000)]
    assert [(d.day, d.count, d.min, d.max) for d in eur.by_day] == [
        (date(2026, 3, 1), 2, 100, 300), (date(2026, 3, 2), 2, 50, 1000)]
    assert (jpy.currency, jpy.sum) == ("JPY", 7)


def test_statistics_filter_uses_inclusive_utc_days():
    q = StatisticsQuery(created_from=date(2026, 3, 1), created_to=date(2026, 3, 31), currency="USD")
    assert statistics_filter("o", q) == {"organization_id": "o", "day": {"$gte": "2026-03-01", "$lte": "2026-03-31"},
                                         "currency": "USD"}


def test_cache_keys_change_with_the_epoch_the_read_model_generation_and_the_query():
    a = digest(SearchQuery(status="failed"))
    assert a == digest(SearchQuery(status="failed")) != digest(SearchQuery(status="completed"))
    assert answer_key("p", "search", "o", "g0", 1, a) != answer_key("p", "search", "o", "g0", 2, a)
    assert answer_key("p", "search", "o", "g0", 1, a) != answer_key("p", "search", "o", "r1", 1, a)


def test_an_empty_range_is_a_valid_search_that_matches_nothing():
    q = SearchQuery(min_amount=5, max_amount=1, created_from=T1, created_to=T0)
    assert search_filter("o", q)["amount"] == {"$gte": 5, "$lt": 2}
    assert StatisticsQuery(created_from=date(2026, 3, 2), created_to=date(2026, 3, 1)).created_to == date(2026, 3, 1)


def test_a_cursor_carries_the_total_of_its_first_page_and_older_cursors_still_read():
    from services.query.adapters.cursors import decode_cursor_total

    q, doc = SearchQuery(sort="amount"), {"_id": "x", "amount": 5}
    assert decode_cursor_total(KEY, "o", q, encode_cursor(KEY, "o", q, doc, 42)) == (5, "x", 42)
    assert decode_cursor_total(KEY, "o", q, encode_cursor(KEY, "o", q, doc)) == (5, "x", None)  # then it counts
