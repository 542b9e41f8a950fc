"""What the query API documents beside the models: query-parameter annotations and the
problem responses each route may answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

from services.query.queries import RFC3339_DATE, RFC3339_DATETIME
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
