"""The search query language: parsing to a typed expression, errors with their column,
limits, and the translation to a MongoDB filter (pure; tests/integration/query runs it)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.query.adapters.cursors import InvalidCursor, decode_cursor, encode_cursor
from services.query.adapters.read_model import choose_index
from services.query.adapters.read_queries import search_filter
from services.query.domain import metadata_entries
from services.query.queries import SearchQuery
from services.query.search_language import (
    MAX_CLAUSES,
    MAX_QUERY_LENGTH,
    Clause,
    Expression,
    InvalidSearchQuery,
    Op,
    parse,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(("text", "clause"), [
    ("id:pay_1", Clause("id", Op.EQ, "pay_1")),
    ("status:completed", Clause("status", Op.EQ, "completed")),
    ("currency:'EUR'", Clause("currency", Op.EQ, "EUR")),
    ("amount:1000", Clause("amount", Op.EQ, 1000)),
    ("amount>1000", Clause("amount", Op.GT, 1000)),
    ("amount >= 0", Clause("amount", Op.GE, 0)),
    ("amount<'5'", Clause("amount", Op.LT, 5)),
    ("amount<=5", Clause("amount", Op.LE, 5)),
    ("created>2026-03-01T00:00:00Z", Clause("created", Op.GT, T0)),
    ("created<=2026-03-01T01:00:00+01:00", Clause("created", Op.LE, T0)),
    ("created:2026-03-01", Clause("created", Op.EQ, date(2026, 3, 1))),
    ('user_id:"u 1"', Clause("user_id", Op.EQ, "u 1")),
    ("description~'it\\'s'", Clause("description", Op.CONTAINS, "it's")),
    ("description:'exact text'", Clause("description", Op.EQ, "exact text")),
    ("metadata['order_id']:'6735'", Clause("metadata", Op.EQ, "6735", key="order_id")),
    ('metadata["a b"]:42', Clause("metadata", Op.EQ, "42", key="a b")),
    ("-status:failed", Clause("status", Op.EQ, "failed", negated=True)),
])
def test_each_field_and_operator_parses_to_a_typed_clause(text, clause):  # noqa: ANN001
    assert parse(text) == Expression((clause,))


def test_clauses_join_by_and_or_by_or():
    both = (Clause("status", Op.EQ, "failed"), Clause("amount", Op.GT, 5))
    assert parse("status:failed AND amount>5") == Expression(both, any=False)
    assert parse("status:failed OR amount>5") == Expression(both, any=True)


# Each invalid query: (text, column of the error, a word of what was expected there)
@pytest.mark.parametrize(("text", "column", "expected"), [
    ("", 1, "field"),
    ("status", 7, "operator"),
    ("status:", 8, "value"),
    ("Status:failed", 1, "field"),
    ("colour:red", 1, "field"),
    ("status:paid", 8, "processing"),
    ("currency:eur", 10, "ISO 4217"),
    ("amount>-5", 8, "minor units"),
    ("amount>1.5", 8, "minor units"),
    ("amount~5", 7, "'>='"),
    ("status>failed", 7, "':'"),
    ("created>yesterday", 9, "RFC 3339"),
    ("created>1700000000", 9, "RFC 3339"),
    ("metadata:1", 1, "metadata['key']"),
    ("status['a']:1", 8, "operator"),
    ("metadata['']:1", 10, "metadata key"),
    ("metadata['a':1", 13, "']'"),
    ("status:failed and amount>1", 15, "AND or OR"),
    ("status:failed AND", 18, "field"),
    ("status:failed AND amount>1 OR amount<5", 28, "AND"),
    ("description~''", 13, "non-empty"),
    ("description~'open", 13, "value"),
    ("status:failed amount>5", 15, "AND or OR"),
])
def test_an_invalid_query_names_the_column_and_what_was_expected(text, column, expected):  # noqa: ANN001
    with pytest.raises(InvalidSearchQuery) as err:
        parse(text)
    assert err.value.column == column, str(err.value)
    assert any(expected in e for e in err.value.expected), err.value.expected
    assert str(err.value).startswith(f"column {column}: ")


def test_limits_on_length_and_clauses():
    parse(" AND ".join(["amount>1"] * MAX_CLAUSES))
    with pytest.raises(InvalidSearchQuery, match=f"at most {MAX_CLAUSES} clauses") as err:
        parse(" AND ".join(["amount>1"] * (MAX_CLAUSES + 1)))
    assert err.value.column == len(" AND ".join(["amount>1"] * MAX_CLAUSES)) + 2
    with pytest.raises(InvalidSearchQuery, match="characters"):
        parse("description~'" + "x" * MAX_QUERY_LENGTH + "'")


def test_the_search_query_model_validates_the_text_and_a_cursor_is_bound_to_it():
    with pytest.raises(ValidationError) as err:
        SearchQuery(query="status:paid")
    assert err.value.errors()[0]["loc"] == ("query",)
    assert isinstance(err.value.errors()[0]["ctx"]["error"], InvalidSearchQuery)
    key, doc = b"k", {"_id": "x", "created_at": T0}
    cursor = encode_cursor(key, "o", SearchQuery(query="amount>1"), doc)
    assert decode_cursor(key, "o", SearchQuery(query="amount>1"), cursor) == (T0, "x")
    with pytest.raises(InvalidCursor, match="another search"):
        decode_cursor(key, "o", SearchQuery(query="amount>2"), cursor)
    with pytest.raises(InvalidCursor, match="another search"):
        decode_cursor(key, "o", SearchQuery(), cursor)


def _filter(text: str, org: str = "org-a") -> dict:
    flt = search_filter(org, SearchQuery(query=text))
    assert flt.pop("organization_id") == org
    return flt


def test_translation_of_each_clause():
    assert _filter("status:failed") == {"status": "failed"}
    assert _filter("id:p1") == {"_id": '["org-a","p1"]'}
    assert _filter("amount>=5") == {"amount": {"$gte": 5}}
    assert _filter("created<2026-03-01T00:00:00Z") == {"created_at": {"$lt": T0}}
    # <= as < the next millisecond (BSON's precision): SecantusDB drops an inclusive bound's own value
    assert _filter("created<=2026-03-01T00:00:00.0004Z") == {"created_at": {"$lt": T0 + timedelta(milliseconds=1)}}
    assert _filter("amount<=5") == {"amount": {"$lt": 6}}
    assert _filter("created:2026-03-01") == {"created_at": {"$gte": T0, "$lt": T1}}
    assert _filter("created>2026-03-01") == {"created_at": {"$gte": T1}}
    assert _filter("created<=2026-03-01") == {"created_at": {"$lt": T1}}
    assert _filter("metadata['order']:42") == {"metadata_kv": "order\x0042"}
    assert _filter("-user_id:u1") == {"user_id": {"$ne": "u1"}}
    assert _filter("-amount>5") == {"amount": {"$not": {"$gt": 5}}}
    assert _filter("status:failed OR amount>5") == {"$or": [{"status": "failed"}, {"amount": {"$gt": 5}}]}
    # An AND is plain fields (what an index lookup takes), a field's comparisons merged.
    assert _filter("status:failed AND amount>5 AND amount<=9") == {"status": "failed", "amount": {"$gt": 5, "$lt": 10}}
    assert _filter("amount>5 AND amount>7") == {"$and": [{"amount": {"$gt": 5}}, {"amount": {"$gt": 7}}]}


def test_a_substring_is_matched_literally_never_as_a_pattern():
    pattern = _filter("description~'.*(a+)+$ [x]'")["description"]["$regex"]
    assert re.search(pattern, "say .*(a+)+$ [x] twice") and not re.search(pattern, "aaaa")


def test_no_query_escapes_its_organization():
    assert search_filter("org-a", SearchQuery(query="id:x OR status:failed", currency="EUR")) == {
        "organization_id": "org-a", "currency": "EUR", "$or": [{"_id": '["org-a","x"]'}, {"status": "failed"}]}
    both = search_filter("org-a", SearchQuery(query="currency:USD", currency="EUR"))
    assert both == {"organization_id": "org-a", "currency": "EUR", "$and": [{"currency": "USD"}]}


def test_metadata_entries_are_text_of_the_values():
    assert metadata_entries({"b": 42, "a": "x", "c": True, "d": None}) == [
        "a\x00x", "b\x0042", "c\x00true", "d\x00null"]


def test_the_hint_follows_the_clauses_every_match_satisfies():
    def index(text: str, sort: str = "created_at") -> str:
        q = SearchQuery(query=text)
        return choose_index(search_filter("o", q), sort, q.expression)

    assert index("metadata['k']:v AND amount>5") == "org_metadata"
    assert index("metadata['k']:v", "amount") == "org_metadata"
    assert index("id:p AND status:failed") == "_id_"
    assert index("status:failed AND amount>5") == "org_status_created"
    assert index("metadata['k']:v OR status:failed") == "org_created"
    assert index("-metadata['k']:v") == "org_created"
    assert index("user_id:u") == "org_user_created"
