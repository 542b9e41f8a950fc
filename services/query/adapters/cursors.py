"""Signed keyset cursors of a payment search: the last item's (sort value, ``_id``) and
the search it belongs to, opaque to clients and signed so they can neither forge nor
alter one (key: ``shared.auth.cursor_key``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.query.queries import SearchQuery

CURSOR_PREFIX = "c2."


class InvalidCursor(ValueError):
    pass


def _binding(org: str, q: SearchQuery) -> str:
    """What a cursor is bound to: the organization, the sort and every filter (not the
    page size, which may change between pages)."""
    search = q.model_dump(mode="json", exclude={"starting_after", "page", "limit"})
    return hashlib.sha256(json.dumps([org, search], sort_keys=True).encode()).hexdigest()[:32]


def _signature(key: bytes, body: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()[:24]).decode()


def encode_cursor(key: bytes, org: str, q: SearchQuery, doc: Mapping[str, Any], total: int | None = None) -> str:
    """An opaque cursor: the last item's (sort value, ``_id``), the search it belongs to
    and the ``total`` its first page counted (the later pages answer it without counting
    again), signed with ``key`` so a client can neither forge nor alter one."""
    value = doc[q.sort_field]
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    raw = json.dumps([_binding(org, q), value, doc["_id"], *([total] if total is not None else [])],
                     separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{CURSOR_PREFIX}{body}.{_signature(key, body.encode())}"


# The type each sort field's value has in a cursor (a datetime travels as ISO text).
_CURSOR_VALUE_TYPES: dict[str, type] = {"created_at": str, "amount": int, "status": str}


def decode_cursor(key: bytes, org: str, q: SearchQuery, cursor: str) -> tuple[Any, str]:
    """``(sort value, _id)`` of the last item of the previous page of this same search."""
    value, pid, _ = decode_cursor_total(key, org, q, cursor)
    return value, pid


def decode_cursor_total(key: bytes, org: str, q: SearchQuery, cursor: str) -> tuple[Any, str, int | None]:
    """:func:`decode_cursor` and the total the first page counted (None in a cursor made
    before totals travelled in them: then the page counts)."""
    body, _, signature = cursor.removeprefix(CURSOR_PREFIX).partition(".")
    if not cursor.startswith(CURSOR_PREFIX) or not hmac.compare_digest(
            signature.encode(), _signature(key, body.encode()).encode()):
        raise InvalidCursor("starting_after must be the next_cursor of a previous page, unchanged")
    try:
        binding, value, pid, *rest = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        total = rest[0] if rest else None
    except (ValueError, TypeError):
        raise InvalidCursor("starting_after is not a valid cursor") from None
    if binding != _binding(org, q):
        raise InvalidCursor("the cursor belongs to another search: keep the sort and filters of the "
                            "request that returned it")
    if (not isinstance(value, _CURSOR_VALUE_TYPES[q.sort_field]) or isinstance(value, bool)
            or not isinstance(pid, str) or not (total is None or type(total) is int)):
        raise InvalidCursor("starting_after is not a valid cursor")  # only a leaked key could get here
    if q.sort_field == "created_at":
        value = datetime.fromisoformat(value)
    return value, pid, total
