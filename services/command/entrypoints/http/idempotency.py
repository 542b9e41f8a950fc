"""The Idempotency-Key protocol, request fingerprints and the ids derived from them.

A request with ``Idempotency-Key`` claims (organization, key) in PostgreSQL with the
request's fingerprint: the same key with the same request replays the stored answer (2xx
and 4xx), with another request it is a 409; while the first is still running, the retry
attaches to the same workflow (the ids below are deterministic) and gets its answer.

The id schemes, all of them (``fp`` = the request fingerprint, ``key`` = the
Idempotency-Key; uuid5 ids are in :data:`ID_NAMESPACE`):

- create, payment id: the body's ``id``; else uuid5(``<org>\\n<key>``) with a key; else uuid4.
- create, command id: ``create-<payment id>-<fp[:12]>``.
- batch, command id: ``batch-<sha256(org, key)[:24]>`` with a key; else ``batch-<uuid4 hex>``.
- batch item, payment id: the item's ``id``; else uuid5(``<batch id>\\n<index>``) with a key;
  else uuid4. Its command id: ``<batch id>.<index>``.
- update / transition / delete, command id: ``<action>-<payment id>-k<sha256(key)[:16]>``
  with a key; else ``<action>-<payment id>-v<If-Match>-<fp[:12]>`` with If-Match; else
  ``<action>-<payment id>-<uuid4 hex>`` (nothing identifies a retry).

Workflow ids are ``payments/<org>/<command id>`` (services/command/temporal/client.py);
Kafka commands bring their own command id (services/command/entrypoints/intake_contract.py).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import Response

from services.command.adapters.store import PaymentStore
from shared.http import ProblemError
from shared.payment import PaymentCommand

ID_NAMESPACE = uuid.UUID("3f8a4f8e-5d1c-4c3e-9a43-6f1f2b8c9d01")

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="Same key + same body replays the first response; a different body is a 409"),
]


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(request: Request, body: Any, *headers: str) -> str:
    """What makes two requests the same: method, path, the fields sent, and ``headers``."""
    payload = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    return digest(request.method, request.url.path, payload, [request.headers.get(h) for h in headers])


# --------------------------------------------------------------------------- ids (table above)


def create_ids(org: str, key: str | None, chosen_id: str | None, request_hash: str) -> tuple[str, str]:
    """``(payment id, command id)`` of a create."""
    payment_id = chosen_id or (str(uuid.uuid5(ID_NAMESPACE, f"{org}\n{key}")) if key else str(uuid.uuid4()))
    return payment_id, f"create-{payment_id}-{request_hash[:12]}"


def batch_command_id(org: str, key: str | None) -> str:
    return f"batch-{digest(org, key)[:24]}" if key else f"batch-{uuid.uuid4().hex}"


def batch_item_ids(batch_id: str, index: int, keyed: bool, chosen_id: str | None) -> tuple[str, str]:
    """``(payment id, command id)`` of item ``index`` of batch ``batch_id``."""
    payment_id = chosen_id or (str(uuid.uuid5(ID_NAMESPACE, f"{batch_id}\n{index}")) if keyed else str(uuid.uuid4()))
    return payment_id, f"{batch_id}.{index}"


def modify_command_id(action: PaymentCommand, payment_id: str, key: str | None, expected: int | None,
                      request_hash: str) -> str:
    if key:
        return f"{action}-{payment_id}-k{digest(key)[:16]}"
    if expected is not None:
        return f"{action}-{payment_id}-v{expected}-{request_hash[:12]}"
    # Nothing identifies a retry: a fresh command (a repeated transition is then honestly
    # refused as illegal rather than answered with a stale first result).
    return f"{action}-{payment_id}-{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- the protocol


async def idempotent(
    store: PaymentStore, org: str, key: str | None, request_hash: str, run: Callable[[], Awaitable[Response]]
) -> Response:
    """Replay the stored response for (org, key) or run and store it (2xx and 4xx)."""
    if key is None:
        return await run()
    record = await store.claim_idempotency_key(org, key, request_hash)
    if record is not None:
        if record.request_hash != request_hash:
            raise ProblemError(409, "Idempotency-Key reused",
                               "this Idempotency-Key was already used with a different request; use a new key",
                               type_="idempotency-key-reused")
        if record.complete:
            return Response(record.body, status_code=record.status_code,
                            headers={**record.headers, "Idempotent-Replayed": "true"})
        # The first request is still in flight: the deterministic workflow id makes this
        # one attach to it and return the same result.
    try:
        response = await run()
    except BaseException:
        await store.release_idempotency_key(org, key)
        raise
    if response.status_code >= 500:
        await store.release_idempotency_key(org, key)
    elif response.status_code == 202:
        # Still running: the key stays claimed but unanswered, so a retry attaches to the
        # same workflow and gets the final answer instead of this 202 again.
        pass
    else:
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        await store.save_idempotent_response(org, key, response.status_code, bytes(response.body), headers)
    return response
