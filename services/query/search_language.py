"""The search query language of ``GET /v1/payments?query=...``, pure: text to a typed
expression (:class:`Expression`), parsed by lark (LALR). The read model translates it to
a MongoDB filter (adapters/read_queries.py), always inside the organization's own filter.

In the spirit of Stripe's search syntax::

    query   := clause ((AND | OR) clause)*     one connective per query: AND or OR, never both
    clause  := ["-"] field op value            "-" negates the clause
    field   := id | status | currency | amount | created | user_id | description
             | metadata['key']
    op      := ":" (equals) | ">" | ">=" | "<" | "<=" | "~" (contains)
    value   := 'text' | "text" | a bare word (letters, digits and _ . : + -)

Amounts are minor units; ``created`` takes an RFC 3339 timestamp, or a date (a whole UTC
day: ``created:2026-03-01`` is that day, ``created>2026-03-01`` after it). Quoted text
escapes a quote or a backslash with a backslash. Every error names its column (1-based)
and what was expected there.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from lark import Lark, Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from shared.money import MAX_AMOUNT, validate_currency
from shared.payment import PaymentStatus

MAX_QUERY_LENGTH = 1000  # characters
MAX_CLAUSES = 10

_GRAMMAR = r"""
start: clause (CONNECTIVE clause)*
clause: NEGATE? FIELD subscript? OP value
subscript: "[" STRING "]"
value: STRING | WORD
CONNECTIVE: "AND" | "OR"
NEGATE: "-"
FIELD: /[a-z_]+/
OP: ">=" | "<=" | ">" | "<" | ":" | "~"
STRING: /'(?:[^'\\]|\\.)*'/s | /"(?:[^"\\]|\\.)*"/s
WORD: /[A-Za-z0-9_.:+\-]+/
%import common.WS
%ignore WS
"""
_PARSER = Lark(_GRAMMAR, parser="lalr")

# What each terminal is, in an error message.
_EXPECTED = {
    "FIELD": "a field (id, status, currency, amount, created, user_id, description, metadata['key'])",
    "OP": "an operator (: > >= < <= ~)",
    "STRING": "a quoted value",
    "WORD": "a value",
    "CONNECTIVE": "AND or OR",
    "NEGATE": "'-'",
    "LSQB": "'['",
    "RSQB": "']'",
    "$END": "the end of the query",
}


class Op(StrEnum):
    EQ = ":"
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    CONTAINS = "~"


_ORDERED = (Op.EQ, Op.GT, Op.GE, Op.LT, Op.LE)
# Each field's operators: the one table the parser checks and the documentation states.
FIELD_OPERATORS: dict[str, tuple[Op, ...]] = {
    "id": (Op.EQ,),
    "status": (Op.EQ,),
    "currency": (Op.EQ,),
    "amount": _ORDERED,
    "created": _ORDERED,
    "user_id": (Op.EQ,),
    "description": (Op.EQ, Op.CONTAINS),
    "metadata": (Op.EQ,),
}

Value = str | int | datetime | date


@dataclass(frozen=True, slots=True)
class Clause:
    """``[-]field op value``; ``key`` is the metadata key of ``metadata['key']``. A
    ``created`` value is a ``datetime`` (aware) or a ``date`` (a whole UTC day)."""

    field: str
    op: Op
    value: Value
    negated: bool = False
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Expression:
    """Clauses joined by one connective: all must hold (AND) or any (``any``: OR)."""

    clauses: tuple[Clause, ...]
    any: bool = False


class InvalidSearchQuery(ValueError):
    """An invalid query: ``column`` (1-based) where it fails, ``expected`` what would do there."""

    def __init__(self, column: int, expected: list[str], problem: str | None = None) -> None:
        self.column = column
        self.expected = expected
        detail = problem or "unexpected input"
        super().__init__(f"column {column}: {detail}; expected {' or '.join(expected)}")


@functools.lru_cache(maxsize=512)
def parse(text: str) -> Expression:
    """The expression ``text`` says, or :class:`InvalidSearchQuery`."""
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidSearchQuery(MAX_QUERY_LENGTH + 1, [f"at most {MAX_QUERY_LENGTH} characters"],
                                 f"the query is {len(text)} characters long")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    connectives = [t for t in tree.children if isinstance(t, Token)]
    mixed = next((t for t in connectives if t != connectives[0]), None) if connectives else None
    if mixed is not None:
        raise InvalidSearchQuery(mixed.column or 0, [str(connectives[0])],
                                 "AND and OR cannot be mixed in one query")
    clauses = tuple(_clause(c) for c in tree.children if not isinstance(c, Token))
    if len(clauses) > MAX_CLAUSES:
        extra = connectives[MAX_CLAUSES - 1]
        raise InvalidSearchQuery(extra.column or 0, ["the end of the query"],
                                 f"a query has at most {MAX_CLAUSES} clauses")
    return Expression(clauses, any=bool(connectives) and connectives[0] == "OR")


def _syntax_error(text: str, exc: UnexpectedInput) -> InvalidSearchQuery:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        column, got = len(text) + 1, "the query ends"
    else:
        column, got = exc.column, f"unexpected {_shown(text, exc)}"
    names = exc.allowed if isinstance(exc, UnexpectedCharacters) else getattr(exc, "expected", set())
    expected = sorted({_EXPECTED.get(n, n) for n in names if n != "WS"}) or ["a clause"]
    return InvalidSearchQuery(column, expected, got)


def _shown(text: str, exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedToken):
        return repr(str(exc.token))
    return repr(text[exc.pos_in_stream]) if exc.pos_in_stream is not None else "input"


def _clause(tree) -> Clause:  # type: ignore[no-untyped-def]
    tokens: list[Token] = []
    key: str | None = None
    key_column = 0
    for child in tree.children:
        if isinstance(child, Token):
            tokens.append(child)
        elif child.data == "subscript":
            token = child.children[0]
            key, key_column = _unquote(token), token.column
        else:  # value
            tokens.append(child.children[0])
    negated = tokens[0].type == "NEGATE"
    field, op, value = tokens[1:] if negated else tokens
    name = str(field)
    if name not in FIELD_OPERATORS:
        raise InvalidSearchQuery(field.column, [_EXPECTED["FIELD"]], f"unknown field {name!r}")
    if (name == "metadata") != (key is not None):
        raise InvalidSearchQuery(key_column or field.column, ["metadata['key']" if name == "metadata" else "an operator"],
                                 "only metadata takes a ['key']" if key is not None else "metadata needs a ['key']")
    if key == "":
        raise InvalidSearchQuery(key_column, ["a metadata key of one character or more"], "empty metadata key")
    allowed = FIELD_OPERATORS[name]
    if Op(str(op)) not in allowed:
        raise InvalidSearchQuery(op.column, [" or ".join(f"'{o}'" for o in allowed)],
                                 f"{name} does not take {str(op)!r}")
    text = _unquote(value) if value.type == "STRING" else str(value)
    try:
        typed = _typed(name, text)
    except ValueError as exc:
        raise InvalidSearchQuery(value.column, [str(exc)], f"invalid {name} value {text!r}") from None
    return Clause(name, Op(str(op)), typed, negated, key)


def _unquote(token: Token) -> str:
    return re.sub(r"\\(.)", r"\1", str(token)[1:-1], flags=re.S)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _typed(field: str, text: str) -> Value:
    """The value of ``field`` that ``text`` says; ValueError names what is expected."""
    if field == "amount":
        if not text.isascii() or not text.isdigit() or int(text) > MAX_AMOUNT:
            raise ValueError(f"a whole number of minor units from 0 to {MAX_AMOUNT}")
        return int(text)
    if field == "status":
        if text not in PaymentStatus.__members__.values():
            raise ValueError("a status: " + ", ".join(PaymentStatus))
        return text
    if field == "currency":
        try:
            return validate_currency(text)
        except ValueError:
            raise ValueError("an upper-case ISO 4217 code such as EUR") from None
    if field == "created":
        return _moment(text)
    if field == "description" and text == "":
        raise ValueError("a non-empty text")
    return text


def _moment(text: str) -> datetime | date:
    try:
        if _DATE.match(text):
            return date.fromisoformat(text)
        if _TIMESTAMP.match(text):
            moment = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text.upper().replace("Z", "+00:00")))
            moment.astimezone(UTC)  # the filter is in UTC: the instant must exist there
            return moment
    except (ValueError, OverflowError):
        pass
    raise ValueError("an RFC 3339 timestamp (2026-03-01T00:00:00Z) or date (2026-03-01)")


def day_range(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a date value covers: [its midnight, the next midnight)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if day == date.max:  # no next midnight: the end of time stands for it
        return start, datetime.max.replace(tzinfo=UTC)
    return start, start + timedelta(days=1)
