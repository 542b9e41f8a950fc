"""What the query API documents beside the models: query-parameter annotations and the
problem responses each route may answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

from services.query.queries import RFC3339_DATE, RFC3339_DATETIME
from services.query.search_language import FIELD_OPERATORS, MAX_CLAUSES, MAX_QUERY_LENGTH
from shared.http import PROBLEM_CONTENT_TYPE
from shared.settings import Settings

# Typed as text and parsed by the query models, which accept RFC 3339 only (FastAPI's own
# parsing would also take a number of seconds, which the document does not allow).
DATETIME_SCHEMA = {"format": "date-time", "pattern": RFC3339_DATETIME}
DATE_SCHEMA = {"format": "date", "pattern": RFC3339_DATE}

# The read-your-writes bound's default, as the parameters' descriptions state it.
READ_WAIT_DEFAULT = f"{Settings.model_fields['read_wait_seconds'].default:g} s"

PROBLEM = {"content": {PROBLEM_CONTENT_TYPE: {"schema": {"type": "object"}}}}
COMMON_ERRORS = {
    401: {"description": "Missing or invalid bearer token", **PROBLEM},
    403: {"description": "The token lacks the payments:read scope", **PROBLEM},
    422: {"description": "Invalid parameters", **PROBLEM},
}
CONSISTENCY_ERRORS = {
    400: {"description": "consistent_with is not a consistency token of this deployment", **PROBLEM},
    404: {"description": "A consistency token issued to another organization", **PROBLEM},
    409: {"description": "consistent_with / min_version not reached by the read model within the wait bound",
          **PROBLEM},
}

# The shape of a token (shared/consistency.py); whether it is genuine only the server can tell (400).
# In a URL: at most 3 tokens of 4 KiB (about 130 payments each), so the request line stays
# inside what HTTP servers read (uvicorn: 16 KiB).
MAX_URL_TOKEN_CHARS = 4096
MAX_URL_TOKENS = 3
ConsistencyToken = Annotated[str, StringConstraints(pattern=r"^ct1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                                                     max_length=MAX_URL_TOKEN_CHARS)]
ConsistentWith = Annotated[list[ConsistencyToken] | None, Query(max_length=MAX_URL_TOKENS, description=(
    "Read-your-writes: the `Consistency-Token` of one or more command results (repeat the parameter for "
    f"several, at most {MAX_URL_TOKENS} of {MAX_URL_TOKEN_CHARS} characters). The answer waits (at most "
    f"PAYMENTS_READ_WAIT_SECONDS, {READ_WAIT_DEFAULT} by default) until the read model reflects every write they name, "
    "else 409 `read-model-behind` with `Retry-After`. A malformed or altered token is a 400; a token "
    "issued to another organization is a 404 that reveals nothing about it."))]

# The search language (services/query/search_language.py), as the OpenAPI document states it.
_FIELDS = "; ".join(f"`{'metadata[' + chr(39) + 'key' + chr(39) + ']' if f == 'metadata' else f}` "
                    f"({' '.join(f'`{o}`' for o in ops)})" for f, ops in FIELD_OPERATORS.items())
QUERY_EXAMPLES = {
    "metadata": {"summary": "A metadata value", "value": "metadata['order_id']:'6735'"},
    "and": {"summary": "AND of clauses", "value": "status:completed AND currency:EUR AND amount>=1000"},
    "or": {"summary": "OR of clauses", "value": "status:failed OR status:cancelled"},
    "negation": {"summary": "Negation, a day", "value": "-status:refunded AND created:2026-03-01"},
    "substring": {"summary": "Description contains", "value": "description~'invoice 42' AND created>=2026-03-01T00:00:00Z"},
}
SearchText = Annotated[str | None, Query(max_length=MAX_QUERY_LENGTH, openapi_examples=QUERY_EXAMPLES, description=(
    "Search query language, ANDed with the other filters: clauses `[-]field op value` joined by `AND` or by "
    "`OR` (not both in one query). Fields and their operators: " + _FIELDS + ". `:` equals, `~` contains "
    "(case-sensitive substring), `>` `>=` `<` `<=` compare, a leading `-` negates. Values: quoted "
    "(`'...'` or `\"...\"`, backslash escapes a quote) or a bare word; amounts in minor units; `created` "
    "takes an RFC 3339 timestamp or a date (a whole UTC day); metadata values compare as text (a number "
    f"as its JSON text). At most {MAX_QUERY_LENGTH} characters and {MAX_CLAUSES} clauses. An invalid query "
    "is a 422 whose error (field `query`) names the `column` and what was `expected` there."))]
