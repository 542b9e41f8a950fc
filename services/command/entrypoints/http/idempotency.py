"""The Idempotency-Key protocol and the ids derived from requests: the same key with the
same request replays the stored answer (another request: a 409), and a retry of a
request still running attaches to its workflow, because every id here is deterministic.
The id schemes: docs/command-service.md, "Deterministic workflow ids".
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import Response

from services.command.ports import IdempotencyRecords
from shared.http import ProblemError
from shared.payment import PaymentAction

ID_NAMESPACE = uuid.UUID("3f8a4f8e-5d1c-4c3e-9a43-6f1f2b8c9d01")

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="Same key + same body replays the first response; a different body is a 409"),
]


def sha256_hex(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(request: Request, body: Any, *headers: str) -> str:
    """What makes two requests the same: method, path, the fields sent, and ``headers``."""
    payload = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    return sha256_hex(request.method, request.url.path, payload, [request.headers.get(h) for h in headers])


# --------------------------------------------------------------------------- ids (table above)


def create_ids(org: str, key: str | None, chosen_id: str | None, request_hash: str) -> tuple[str, str]:
    """``(payment id, command id)`` of a create."""
    payment_id = chosen_id or (str(uuid.uuid5(ID_NAMESPACE, f"{org}\n{key}")) if key else str(uuid.uuid4()))
    return payment_id, f"create-{payment_id}-{request_hash[:12]}"


def batch_command_id(org: str, key: str | None) -> str:
    return f"batch-{sha256_hex(org, key)[:24]}" if key else f"batch-{uuid.uuid4().hex}"


def batch_item_ids(batch_id: str, index: int, keyed: bool, chosen_id: str | None) -> tuple[str, str]:
    """``(payment id, command id)`` of item ``index`` of batch ``batch_id``."""
    payment_id = chosen_id or (str(uuid.uuid5(ID_NAMESPACE, f"{batch_id}\n{index}")) if keyed else str(uuid.uuid4()))
    return payment_id, f"{batch_id}.{index}"


def modify_command_id(action: PaymentAction, payment_id: str, key: str | None, expected: int | None,
                      request_hash: str) -> str:
    if key:
        return f"{action}-{payment_id}-k{sha256_hex(key)[:16]}"
    if expected is not None:
        return f"{action}-{payment_id}-v{expected}-{request_hash[:12]}"
    # Nothing identifies a retry: a fresh command (a repeated transition is then honestly
    # refused as illegal rather than answered with a stale first result).
    return f"{action}-{payment_id}-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- the protocol


class Idempotent:
    """One request under an Idempotency-Key (none: every request runs).

    ``async with Idempotent(...) as request``: ``request.replay`` is the stored answer to
    send again, if any; otherwise run the command and pass its answer through
    :meth:`answer`, which records it (2xx, 4xx), frees the key (5xx) or keeps it claimed but
    unanswered (202: a retry then attaches to the same workflow, its ids being
    deterministic, and gets the final answer). A block that raises frees the key.
    """

    def __init__(self, records: IdempotencyRecords, org: str, key: str | None, request_hash: str) -> None:
        self.records, self.org, self.key, self.request_hash = records, org, key, request_hash
        self.replay: Response | None = None
        self._answered = False

    async def __aenter__(self) -> Idempotent:
        if self.key is None:
            return self
        record = await self.records.claim(self.org, self.key, self.request_hash)
        if record is not None:
            if record.request_hash != self.request_hash:
                raise ProblemError(409, "Idempotency-Key reused",
                                   "this Idempotency-Key was already used with a different request; use a new key",
                                   type_="idempotency-key-reused")
            if record.complete:
                self.replay = Response(record.body, status_code=record.status_code,
                                       headers={**record.headers, "Idempotent-Replayed": "true"})
            # Else the first request is still in flight: this one attaches to its workflow.
        return self

    async def answer(self, response: Response) -> Response:
        self._answered = True
        if self.key is None or response.status_code == 202:
            return response
        if response.status_code >= 500:
            await self.records.release(self.org, self.key)
        else:
            headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            await self.records.save(self.org, self.key, response.status_code, bytes(response.body), headers)
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self.key is not None and not self._answered and self.replay is None:
            await self.records.release(self.org, self.key)
