"""The command API's request and response headers besides Idempotency-Key
(services/command/entrypoints/http/idempotency.py): ``If-Match``, ``Prefer`` and ``Consistency-Token``."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Header

from shared.http import ProblemError

# If-Match: `*`, a version `3`, or its ETag `"3"` / `W/"3"`; the OpenAPI pattern is this one.
IF_MATCH_PATTERN = r'^\s*(?:\*|(?:W/)?(?:"([1-9]\d{0,8})"|([1-9]\d{0,8})))\s*$'
_ETAG_RE = re.compile(IF_MATCH_PATTERN)
CONSISTENCY_HEADER = "Consistency-Token"

Prefer = Annotated[str | None, Header(description="`respond-async`: answer 202 with a command status URL")]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="Expected payment version: `3` or the ETag form `\"3\"`; 412 if stale",
           json_schema_extra={"type": "string", "pattern": IF_MATCH_PATTERN}),
]
TOKEN_HEADER_DOC = {CONSISTENCY_HEADER: {
    "description": "Opaque token naming this write: pass it as `consistent_with` to the query API (search, "
                   "get, statistics) to get an answer that reflects it (read-your-writes)",
    "schema": {"type": "string"}}}


def wants_async(prefer: str | None) -> bool:
    """``Prefer: respond-async`` (among other preferences, in any case)."""
    return bool(prefer) and any(
        token.split("=")[0].strip().lower() == "respond-async" for token in re.split(r"[;,]", prefer or "")
    )


def parse_if_match(value: str | None) -> int | None:
    """The expected version, None when absent or ``*``; a 400 problem for anything else."""
    match = _ETAG_RE.match(value) if value is not None else None
    if value is None or (match and not (match.group(1) or match.group(2))):
        return None  # absent, or `*`
    if match is None:
        raise ProblemError(400, "Bad Request", f"If-Match must be a payment version such as 3 or \"3\", got {value!r}",
                           type_="invalid-if-match")
    return int(match.group(1) or match.group(2))


def token_header(token: str | None) -> dict[str, str]:
    """Send it back as `consistent_with` to the query API to read this write."""
    return {CONSISTENCY_HEADER: token} if token else {}
