"""The payment: its snapshot, its status machine and the limits on its fields.

This is the one place that says which transitions and which commands are allowed in
which status (DESIGN section 3). Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.money import MAX_AMOUNT, validate_currency

MAX_DESCRIPTION_LENGTH = 1000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 500
MAX_ID_LENGTH = 128


class PaymentStatus(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class PaymentCommand(StrEnum):
    """Commands on an existing payment (create has no prior status)."""

    UPDATE = "update"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    REFUND = "refund"
    DELETE = "delete"


INITIAL_STATUS = PaymentStatus.PROCESSING

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PROCESSING: frozenset(
        {PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.CANCELLED}
    ),
    PaymentStatus.COMPLETED: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.CANCELLED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}

# Status-changing commands and the status they lead to.
COMMAND_TARGET: dict[PaymentCommand, PaymentStatus] = {
    PaymentCommand.COMPLETE: PaymentStatus.COMPLETED,
    PaymentCommand.FAIL: PaymentStatus.FAILED,
    PaymentCommand.CANCEL: PaymentStatus.CANCELLED,
    PaymentCommand.REFUND: PaymentStatus.REFUNDED,
}

# Delete is refused once money has moved (the seed's rule).
UNDELETABLE: frozenset[PaymentStatus] = frozenset({PaymentStatus.COMPLETED, PaymentStatus.REFUNDED})


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def is_allowed(command: PaymentCommand, status: PaymentStatus) -> bool:
    """Whether ``command`` may run on a payment in ``status``."""
    if command is PaymentCommand.UPDATE:
        return status is PaymentStatus.PROCESSING
    if command is PaymentCommand.DELETE:
        return status not in UNDELETABLE
    return can_transition(status, COMMAND_TARGET[command])


def allowed_commands(status: PaymentStatus) -> list[PaymentCommand]:
    return [c for c in PaymentCommand if is_allowed(c, status)]


def rejection_reason(command: PaymentCommand, status: PaymentStatus) -> str:
    if command is PaymentCommand.UPDATE:
        return f"a payment can only be updated while processing; it is {status}"
    if command is PaymentCommand.DELETE:
        return f"a {status} payment cannot be deleted"
    return f"cannot {command} a {status} payment (allowed: {', '.join(allowed_commands(status)) or 'none'})"


def validate_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is a flat map of short string keys to scalar values, bounded in size."""
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValueError(f"metadata keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters")
        if key.startswith("$") or "." in key:
            raise ValueError(f"metadata key {key!r} must not start with '$' or contain '.'")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise ValueError(f"metadata value for {key!r} must be a string, number, boolean or null")
        if isinstance(item, str) and len(item) > MAX_METADATA_VALUE_LENGTH:
            raise ValueError(
                f"metadata value for {key!r} is longer than {MAX_METADATA_VALUE_LENGTH} characters"
            )
    return value


Amount = Field(gt=0, le=MAX_AMOUNT, strict=True, description="Minor units of the currency (cents), > 0")


class PaymentSnapshot(BaseModel):
    """The full state of a payment after an event (event-carried state transfer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    organization_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    user_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    amount: int = Amount
    currency: str = Field(description="ISO 4217 upper-case code", examples=["EUR"])
    status: PaymentStatus
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int = Field(ge=1, strict=True)
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return validate_currency(v)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_metadata(v)

    @field_validator("created_at", "updated_at", "deleted_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps must carry a time zone (RFC 3339)")
        return v
