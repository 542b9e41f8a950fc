"""A payment's history on the read side, pure: one document per event (organization,
payment, version), holding the event's who/what/when and the payment's full snapshot
after it; the changes of a version are computed from its snapshot and the one before,
over whatever fields snapshots have (a field added to the snapshot shows up as a change
with nothing else to do). Written by the projection (adapters/batch_writes.py), read by
adapters/read_model.py, checked by services/tools/reconcile.py against PostgreSQL's log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.query.queries import HistoryEntry, PaymentHistory
from shared.events import UNKNOWN_ACTOR, PaymentEvent
from shared.payment_view import Payment

# Fields every new version changes: the entry says them once (version, time), not as changes.
BOOKKEEPING = frozenset({"version", "updated_at"})


def history_id(organization_id: str, payment_id: str, version: int) -> str:
    """``_id`` of one version's history document (a JSON triple: unambiguous)."""
    return json.dumps([organization_id, payment_id, version], separators=(",", ":"))


def snapshot_of(event: PaymentEvent) -> dict[str, Any]:
    """The payment after ``event`` as JSON values: what history stores and compares."""
    return event.payment.model_dump(mode="json")


def history_document(event: PaymentEvent) -> dict[str, Any]:
    """The history document of one event (the same whoever writes it: idempotent)."""
    return {
        "_id": history_id(event.organizationid, event.subject, event.paymentversion),
        "organization_id": event.organizationid,
        "payment_id": event.subject,
        "version": event.paymentversion,
        "event_type": event.type.short,
        "event_id": event.id,
        "time": event.time.astimezone(UTC),
        "actor": event.actor,
        "command_id": event.commandid,
        "payment": snapshot_of(event),
    }


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"old", "new"}}`` for every field whose value differs between two
    consecutive snapshots (``before`` None: the first version, everything it sets), but
    the bookkeeping fields. Generic over the snapshot's fields."""
    before = before or {}
    fields = sorted((set(before) | set(after)) - BOOKKEEPING)
    return {f: {"old": before.get(f), "new": after.get(f)} for f in fields if before.get(f) != after.get(f)}


def entries(docs: Sequence[Mapping[str, Any]], previous: Mapping[str, Any] | None) -> list[HistoryEntry]:
    """History documents in version order -> entries; ``previous``: the document of the
    version before the first (None at version 1, or when that version is missing)."""
    out = []
    for doc in docs:
        before = previous["payment"] if previous is not None and previous["version"] == doc["version"] - 1 else None
        out.append(HistoryEntry(
            version=doc["version"], event_type=doc["event_type"], event_id=doc["event_id"],
            time=_utc(doc["time"]), actor=doc.get("actor") or UNKNOWN_ACTOR, command_id=doc.get("command_id"),
            changes=changes(before, doc["payment"]) if before is not None or doc["version"] == 1 else None,
        ))
        previous = doc
    return out


def history_page(payment_id: str, window: Sequence[Mapping[str, Any]], after: int, limit: int) -> PaymentHistory:
    """One page from ``window``: the history documents of versions ``max(after, 1)`` and
    up, in order, at least ``limit + 2`` of them if there are (the one at ``after``, if
    held, gives the first entry's changes; one beyond the page says there is more)."""
    docs = list(window)
    previous = docs.pop(0) if docs and docs[0]["version"] <= after else None
    page, has_more = docs[:limit], len(docs) > limit
    return PaymentHistory(payment_id=payment_id, data=entries(page, previous), has_more=has_more,
                          next_cursor=str(page[-1]["version"]) if has_more else None)


def payment_at(doc: Mapping[str, Any]) -> Payment:
    """The payment as it was at one history document's version."""
    return Payment.model_validate(doc["payment"])


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
