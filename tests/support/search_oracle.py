"""The search language evaluated in Python over payments: what the read model's MongoDB
filter must answer (the property tests compare the two), and random queries in the
language over a pool of values that real payments hold."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from services.query.search_language import Clause, Expression, Op
from shared.payment_view import Payment


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _compare(have: Any, op: Op, want: Any) -> bool:
    if op is Op.EQ:
        return bool(have == want)
    return bool({Op.GT: have > want, Op.GE: have >= want, Op.LT: have < want, Op.LE: have <= want}[op])


def holds(c: Clause, p: Payment) -> bool:
    if c.field == "metadata":
        found = c.key in p.metadata and _text(p.metadata[c.key]) == c.value
    elif c.field == "description" and c.op is Op.CONTAINS:
        found = str(c.value) in p.description
    elif c.field == "created" and isinstance(c.value, date) and not isinstance(c.value, datetime):
        day = p.created_at.astimezone(UTC).date()
        found = _compare(day, c.op, c.value)
    elif c.field == "created":
        found = _compare(p.created_at, c.op, c.value)
    else:
        found = _compare(getattr(p, c.field), c.op, c.value)
    return found != c.negated


def matches(expr: Expression, p: Payment) -> bool:
    results = (holds(c, p) for c in expr.clauses)
    return any(results) if expr.any else all(results)


# --------------------------------------------------------------------------- random queries

BASE = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
STATUSES = ["processing", "completed", "failed", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "JPY"]
USERS = ["u0", "u1", "u-2", None]
WORDS = ["invoice", "Invoice", "refund", "a.b", "(x)", "$y", "日本", "it's", 'say "hi"']
META_KEYS = ["order", "ref", "a b"]
META_VALUES = ["1", 1, "x-1", True, None, "A.B*"]
AMOUNTS = [1, 99, 100, 101, 500, 1000, 10**6]


def moment(i: int) -> datetime:
    """Payments are created an hour apart around two UTC midnights (ms precision, as stored)."""
    return BASE + timedelta(minutes=53 * i)


def _quote(text: str, style: str) -> str:
    if style == "bare" and text and all(ch.isalnum() or ch in "_.:+-" for ch in text) and text.isascii():
        return text
    q = '"' if style == "double" else "'"
    return q + text.replace("\\", "\\\\").replace(q, "\\" + q) + q


@st.composite
def clauses(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(["id", "status", "currency", "amount", "created", "user_id", "description",
                                  "metadata"]))
    style = draw(st.sampled_from(["bare", "single", "double"]))
    neg = "-" if draw(st.booleans()) else ""
    ordered = st.sampled_from([":", ">", ">=", "<", "<="])
    if field == "id":
        return f"{neg}id:{_quote(draw(st.sampled_from(['p-000', 'p-007', 'nope'])), style)}"
    if field == "status":
        return f"{neg}status:{_quote(draw(st.sampled_from(STATUSES)), style)}"
    if field == "currency":
        return f"{neg}currency:{_quote(draw(st.sampled_from(CURRENCIES)), style)}"
    if field == "user_id":
        return f"{neg}user_id:{_quote(draw(st.sampled_from([u for u in USERS if u])), style)}"
    if field == "amount":
        return f"{neg}amount{draw(ordered)}{draw(st.sampled_from(AMOUNTS))}"
    if field == "created":
        if draw(st.booleans()):
            value = draw(st.sampled_from(["2026-03-01", "2026-03-02", "2026-03-03"]))
        else:
            value = moment(draw(st.integers(-2, 40))).isoformat().replace("+00:00", "Z")
        return f"{neg}created{draw(ordered)}{value}"
    if field == "description":
        op = draw(st.sampled_from(["~", "~", ":"]))
        text = draw(st.sampled_from(WORDS + ["invoice 3", "nothing"]))
        return f"{neg}description{op}{_quote(text, style)}"
    key = draw(st.sampled_from(META_KEYS))
    value = _text(draw(st.sampled_from(META_VALUES)))
    return f"{neg}metadata[{_quote(key, 'single')}]:{_quote(value, style)}"


@st.composite
def queries(draw: st.DrawFn) -> str:
    parts = draw(st.lists(clauses(), min_size=1, max_size=4))
    joint = draw(st.sampled_from([" AND ", " OR ", "  AND  "]))
    return joint.join(parts)
