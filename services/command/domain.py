"""Pure command rules: validate a command against the current payment and decide the
new snapshot and its event, or refuse it with a typed :class:`Rejected`. No I/O, no
clock (``now`` is passed in): the same function serves the workflow's validate step, the
activity's execute step and property tests. What a rejection becomes on the wire (an HTTP
status, a problem) is the edges' business (services/command/entrypoints/http/errors.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.command.commands import CreatePayment, ModifyPayment, Rejected, RejectionKind
from shared.events import EventType, PaymentEvent, describe_validation_error, new_event, system_actor
from shared.payment import (
    ACTION_TARGET,
    INITIAL_STATUS,
    MAX_REFUNDS_PER_PAYMENT,
    PaymentAction,
    PaymentSnapshot,
    PaymentStatus,
    Refund,
    can_transition,
    is_allowed,
    rejection_reason,
    status_after_refunds,
)

UPDATABLE_FIELDS = ("amount", "description", "metadata", "expires_at")
CREATED_FIELDS = ("user_id", "amount", "currency", "status", "description", "metadata")
EXPIRY_ACTOR = system_actor("expiry")


@dataclass(frozen=True, slots=True)
class Decision:
    snapshot: PaymentSnapshot
    event_type: EventType
    changes: dict[str, tuple[Any, Any]]
    command_id: str | None
    actor: str | None
    refund: Refund | None = None  # what a refunded event records

    def event(self, source: str, *, event_id: str | None = None, trace: dict[str, str] | None = None) -> PaymentEvent:
        """``trace``: the command's trace context, which the event carries (its CloudEvent
        ``traceparent`` / ``tracestate``) through the outbox and Kafka."""
        return new_event(
            self.event_type, self.snapshot, self.changes, source=source, actor=self.actor,
            command_id=self.command_id, event_id=event_id, time=self.snapshot.updated_at, trace=trace,
            refund=self.refund,
        )


def _snapshot(values: dict[str, Any]) -> PaymentSnapshot:
    try:
        return PaymentSnapshot.model_validate(values)
    except ValidationError as exc:
        raise Rejected(RejectionKind.VALIDATION, describe_validation_error(exc)) from None


def validate_create(cmd: CreatePayment, now: datetime) -> PaymentSnapshot:
    """The snapshot a create would produce, or :class:`Rejected` (validation)."""
    return _snapshot(
        {
            "id": cmd.payment_id, "organization_id": cmd.organization_id, "user_id": cmd.user_id,
            "amount": cmd.amount, "currency": cmd.currency, "status": INITIAL_STATUS,
            "description": cmd.description, "metadata": cmd.metadata, "version": 1,
            "created_at": now, "updated_at": now, "expires_at": cmd.expires_at,
        }
    )


def decide_create(cmd: CreatePayment, now: datetime) -> Decision:
    snapshot = validate_create(cmd, now)
    names = CREATED_FIELDS + (("expires_at",) if snapshot.expires_at is not None else ())
    changes = {name: (None, _plain(getattr(snapshot, name))) for name in names}
    return Decision(snapshot, EventType.CREATED, changes, cmd.command_id, cmd.actor)


def validate_update_fields(cmd: ModifyPayment) -> None:
    """Field checks of an update or a refund that need no current state (run in the workflow)."""
    if cmd.action is PaymentAction.REFUND:
        if cmd.amount is not None and (isinstance(cmd.amount, bool) or cmd.amount <= 0):
            raise Rejected(RejectionKind.VALIDATION, "amount: a refund is a positive integer of minor units")
        return
    if cmd.action is not PaymentAction.UPDATE:
        return
    requested = {name: getattr(cmd, name) for name in UPDATABLE_FIELDS if getattr(cmd, name) is not None}
    if not requested:
        raise Rejected(RejectionKind.VALIDATION, "send at least one of amount, description, metadata, expires_at")


def decide_modify(current: PaymentSnapshot | None, cmd: ModifyPayment, now: datetime) -> Decision:
    """Apply update / complete / fail / cancel / refund / delete to ``current``."""
    if current is None or current.deleted_at is not None or current.organization_id != cmd.organization_id:
        raise Rejected(RejectionKind.NOT_FOUND, f"payment {cmd.payment_id!r} does not exist")
    if cmd.expected_version is not None and cmd.expected_version != current.version:
        raise Rejected(
            RejectionKind.VERSION_MISMATCH,
            f"payment {current.id!r} is at version {current.version}, not {cmd.expected_version}",
            current_version=current.version,
        )
    if not is_allowed(cmd.action, current.status):
        raise Rejected(
            RejectionKind.ILLEGAL_TRANSITION, rejection_reason(cmd.action, current.status),
            current_version=current.version,
        )
    validate_update_fields(cmd)
    values = current.model_dump()
    values.update(version=current.version + 1, updated_at=now)
    if cmd.action is PaymentAction.UPDATE:
        values.update({n: getattr(cmd, n) for n in UPDATABLE_FIELDS if getattr(cmd, n) is not None})
        event_type = EventType.UPDATED
    elif cmd.action is PaymentAction.DELETE:
        values["deleted_at"] = now
        event_type = EventType.DELETED
    elif cmd.action is PaymentAction.REFUND:
        refund = _refund(current, cmd, now)
        refunded = current.amount_refunded + refund.amount
        values.update(amount_refunded=refunded, status=status_after_refunds(current.amount, refunded),
                      refunds=[*values["refunds"], refund.model_dump()])
        event_type = EventType.REFUNDED
    else:
        values["status"] = ACTION_TARGET[cmd.action]
        event_type = EventType.STATUS_CHANGED
    snapshot = _snapshot(values)
    changes = {
        name: (_plain(getattr(current, name)), _plain(getattr(snapshot, name)))
        for name in ("amount", "description", "metadata", "status", "deleted_at", "expires_at", "amount_refunded")
        if getattr(current, name) != getattr(snapshot, name)
    }
    refund = snapshot.refunds[-1] if event_type is EventType.REFUNDED else None
    return Decision(snapshot, event_type, changes, cmd.command_id, cmd.actor, refund)


def refund_id(cmd: ModifyPayment) -> str:
    """Derived from the command, so a retried or replayed refund names the same refund."""
    return "rf_" + uuid.uuid5(uuid.NAMESPACE_URL, f"{cmd.organization_id}/{cmd.payment_id}/{cmd.command_id}").hex


def _refund(current: PaymentSnapshot, cmd: ModifyPayment, now: datetime) -> Refund:
    """The refund ``cmd`` asks of ``current``: its amount (all that is left if none is
    named), at most what is left, or :class:`Rejected`."""
    remaining = current.amount - current.amount_refunded
    amount = remaining if cmd.amount is None else cmd.amount
    if amount > remaining:
        raise Rejected(
            RejectionKind.REFUND_EXCEEDS_REMAINING,
            f"cannot refund {amount}: only {remaining} of payment {current.id!r} is left to refund "
            f"(remaining: {remaining})",
            current_version=current.version, remaining=remaining,
        )
    if len(current.refunds) >= MAX_REFUNDS_PER_PAYMENT - 1 and amount < remaining:
        raise Rejected(RejectionKind.CONFLICT, f"a payment has at most {MAX_REFUNDS_PER_PAYMENT} refunds: the "
                       f"last one of payment {current.id!r} must refund all that is left ({remaining})",
                       current_version=current.version, remaining=remaining)
    try:
        return Refund(id=refund_id(cmd), amount=amount, reason=cmd.reason or "", created_at=now, actor=cmd.actor)
    except ValidationError as exc:
        raise Rejected(RejectionKind.VALIDATION, describe_validation_error(exc)) from None


def expiry_deadline(current: PaymentSnapshot | None) -> datetime | None:
    """The deadline that may still expire ``current``: None once nothing can (gone, settled,
    or no deadline). A timer for any other deadline (moved since) never expires it."""
    if current is None or current.deleted_at is not None or current.status is not PaymentStatus.PROCESSING:
        return None
    return current.expires_at


def decide_expire(current: PaymentSnapshot, now: datetime) -> Decision:
    """processing -> expired, the system's act (actor ``system:expiry``)."""
    if not can_transition(current.status, PaymentStatus.EXPIRED):
        raise Rejected(RejectionKind.ILLEGAL_TRANSITION, f"a {current.status} payment cannot expire",
                       current_version=current.version)
    snapshot = _snapshot({**current.model_dump(), "status": PaymentStatus.EXPIRED,
                          "version": current.version + 1, "updated_at": now})
    changes = {"status": (str(current.status), str(snapshot.status))}
    return Decision(snapshot, EventType.STATUS_CHANGED, changes, None, EXPIRY_ACTOR)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(value, str):  # StrEnum
        return str(value)
    return value
