"""The payment: its snapshot, its status machine, what each action may do in each status,
and what a payment may hold. One content contract for the command API, the rules, the
event schema and the projector, so whatever one accepts every store downstream accepts
(PostgreSQL refuses NUL, MongoDB integers beyond 64 bits, JSON NaN). Pure.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from shared.money import Amount, CurrencyCode

MAX_DESCRIPTION_LENGTH = 1000
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 500
MAX_METADATA_BYTES = 16384  # the whole map, encoded as compact UTF-8 JSON
MAX_ID_LENGTH = 128  # organization and user ids; a stored snapshot's id (events are history)
# A payment id wherever a client or producer names one (HTTP paths and bodies, Kafka
# subjects, commands, the facade): the one rule.
MAX_PAYMENT_ID_LENGTH = 64
PAYMENT_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_PAYMENT_ID_LENGTH - 1}}}$"
# Numbers must fit a signed 64-bit integer (MongoDB's widest integer; BSON refuses more).
MIN_NUMBER = -(2**63)
MAX_NUMBER = 2**63 - 1
NO_NUL_PATTERN = "^[^\\u0000]*$"  # JSON Schema (ECMA-262) for "no NUL character"
MAX_ACTOR_LENGTH = 1024  # who caused an event or a refund (shared/events.py): may be a producer's URI
MAX_REFUND_REASON_LENGTH = 500
# A snapshot travels whole in every event: its list of refunds stays bounded.
MAX_REFUNDS_PER_PAYMENT = 100


class PaymentStatus(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    EXPIRED = "expired"  # its deadline (expires_at) passed while processing: the system's act
    PARTIALLY_REFUNDED = "partially_refunded"


class PaymentAction(StrEnum):
    """What a command does to an existing payment (create has no prior status)."""

    UPDATE = "update"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    REFUND = "refund"
    DELETE = "delete"


INITIAL_STATUS = PaymentStatus.PROCESSING

TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PROCESSING: frozenset(
        {PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.EXPIRED}
    ),
    PaymentStatus.COMPLETED: frozenset({PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED}),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.CANCELLED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
    PaymentStatus.EXPIRED: frozenset(),
    # A partial refund leaves some money to refund: another refund may follow.
    PaymentStatus.PARTIALLY_REFUNDED: frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}),
}

# Status-changing actions and the status they lead to.
ACTION_TARGET: dict[PaymentAction, PaymentStatus] = {
    PaymentAction.COMPLETE: PaymentStatus.COMPLETED,
    PaymentAction.FAIL: PaymentStatus.FAILED,
    PaymentAction.CANCEL: PaymentStatus.CANCELLED,
    PaymentAction.REFUND: PaymentStatus.REFUNDED,
}

# Delete is refused once money has moved (the seed's rule).
UNDELETABLE: frozenset[PaymentStatus] = frozenset(
    {PaymentStatus.COMPLETED, PaymentStatus.REFUNDED, PaymentStatus.PARTIALLY_REFUNDED}
)


def status_after_refunds(amount: int, amount_refunded: int) -> PaymentStatus:
    """A refunded payment's status: ``refunded`` once all of its amount is refunded."""
    return PaymentStatus.REFUNDED if amount_refunded >= amount else PaymentStatus.PARTIALLY_REFUNDED


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def is_allowed(action: PaymentAction, status: PaymentStatus) -> bool:
    """Whether ``action`` may run on a payment in ``status``."""
    if action is PaymentAction.UPDATE:
        return status is PaymentStatus.PROCESSING
    if action is PaymentAction.DELETE:
        return status not in UNDELETABLE
    return can_transition(status, ACTION_TARGET[action])


def allowed_actions(status: PaymentStatus) -> list[PaymentAction]:
    return [a for a in PaymentAction if is_allowed(a, status)]


def rejection_reason(action: PaymentAction, status: PaymentStatus) -> str:
    if action is PaymentAction.UPDATE:
        return f"a payment can only be updated while processing; it is {status}"
    if action is PaymentAction.DELETE:
        return f"a {status} payment cannot be deleted"
    return f"cannot {action} a {status} payment (allowed: {', '.join(allowed_actions(status)) or 'none'})"


def check_text(value: str) -> str:
    """Text a payment may hold: no NUL character, valid Unicode (no lone surrogate)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (a lone surrogate such as \\ud800 is not)") from None
    return value


def check_number(value: int | float) -> int | float:
    """Finite, and within a signed 64-bit integer: exactly for integers (BSON int64),
    as a double for floats (JSON Schema's bounds are compared as doubles: 2**63 - 1 is
    2**63 there, so a float at that bound is what the event schema allows)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number (NaN and Infinity are not JSON)")
        low, high = float(MIN_NUMBER), float(MAX_NUMBER)
    else:
        low, high = MIN_NUMBER, MAX_NUMBER
    if not low <= value <= high:
        raise ValueError(f"must be between {MIN_NUMBER} and {MAX_NUMBER} (signed 64 bits)")
    return value


def metadata_size(value: dict[str, Any]) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())


def validate_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is a flat map of short string keys to scalar values, bounded in size."""
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValueError(f"metadata keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters")
        if key.startswith("$") or "." in key:
            raise ValueError(f"metadata key {key!r} must not start with '$' or contain '.'")
        _check(check_text, key, f"metadata key {key!r}")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise ValueError(f"metadata value for {key!r} must be a string, number, boolean or null")
        if isinstance(item, str):
            if len(item) > MAX_METADATA_VALUE_LENGTH:
                raise ValueError(
                    f"metadata value for {key!r} is longer than {MAX_METADATA_VALUE_LENGTH} characters"
                )
            _check(check_text, item, f"metadata value for {key!r}")
        elif isinstance(item, int | float) and not isinstance(item, bool):
            _check(check_number, item, f"metadata value for {key!r}")
    size = metadata_size(value)
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    return value


def _check(rule: Any, value: Any, what: str) -> None:
    try:
        rule(value)
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None


# The JSON Schema of metadata says what validate_metadata checks, except what JSON Schema
# cannot express (lone surrogates, total encoded size), which its description states.
METADATA_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        f"Flat map of scalars: at most {MAX_METADATA_KEYS} keys of 1 to {MAX_METADATA_KEY_LENGTH} "
        "characters (no leading '$', no '.'); values are strings of at most "
        f"{MAX_METADATA_VALUE_LENGTH} characters, numbers within signed 64 bits, booleans or null; "
        f"no NUL character, valid Unicode; at most {MAX_METADATA_BYTES} bytes as compact UTF-8 JSON."
    ),
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY_LENGTH, "pattern": "^[^$.\\u0000][^.\\u0000]*$"},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH, "pattern": NO_NUL_PATTERN},
            {"type": "number", "minimum": MIN_NUMBER, "maximum": MAX_NUMBER},
            {"type": "boolean"},
            {"type": "null"},
        ]
    },
}

Metadata = Annotated[dict[str, Any], AfterValidator(validate_metadata), WithJsonSchema(METADATA_JSON_SCHEMA)]


def _text(max_length: int, min_length: int = 0, **extra: Any) -> Any:
    """A bounded text field of the contract (no NUL, valid Unicode), in pydantic and JSON Schema."""
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length, json_schema_extra={"pattern": NO_NUL_PATTERN}, **extra),
        AfterValidator(check_text),
    ]


Id = _text(MAX_ID_LENGTH, 1)
Description = _text(MAX_DESCRIPTION_LENGTH)
UserId = _text(MAX_ID_LENGTH)
RefundReason = _text(MAX_REFUND_REASON_LENGTH)
ActorId = _text(MAX_ACTOR_LENGTH, 1)


def check_aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (RFC 3339)")
    return value


# A timestamp of the contracts (snapshots, events, query filters): RFC 3339 with an offset.
AwareDatetime = Annotated[datetime, AfterValidator(check_aware)]


class Refund(BaseModel):
    """One refund of a payment (``POST /v1/payments/{id}/refunds``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    amount: Amount = Field(description="Minor units refunded, > 0")
    reason: RefundReason = ""
    created_at: AwareDatetime
    actor: ActorId | None = Field(default=None, description="Who refunded: the actor of the refund's command")


class PaymentSnapshot(BaseModel):
    """The full state of a payment after an event (event-carried state transfer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    organization_id: Id
    user_id: UserId | None = None
    amount: Amount = Field(description="Minor units of the currency (cents), > 0")
    currency: CurrencyCode = Field(description="ISO 4217 upper-case code", examples=["EUR"])
    status: PaymentStatus
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)
    version: int = Field(ge=1, strict=True)
    created_at: AwareDatetime
    updated_at: AwareDatetime
    deleted_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = Field(
        default=None, description="Deadline: still processing then, the payment becomes expired (none: never)")
    amount_refunded: int = Field(default=0, ge=0, strict=True,
                                 description="Minor units refunded so far: the sum of `refunds`, at most `amount`")
    refunds: list[Refund] = Field(default_factory=list, max_length=MAX_REFUNDS_PER_PAYMENT,
                                  description="The refunds, oldest first")

    @model_validator(mode="before")
    @classmethod
    def _refunded_before_partial_refunds(cls, data: Any) -> Any:
        """A payment refunded before partial refunds existed carries no amount_refunded:
        all of it was refunded (migration 005 says the same of the stored rows)."""
        if isinstance(data, dict) and "amount_refunded" not in data and data.get("status") == PaymentStatus.REFUNDED:
            return {**data, "amount_refunded": data.get("amount")}
        return data

    @model_validator(mode="after")
    def _refunds_within_amount(self) -> PaymentSnapshot:
        if self.amount_refunded > self.amount:
            raise ValueError(f"amount_refunded {self.amount_refunded} exceeds amount {self.amount}")
        if sum(r.amount for r in self.refunds) > self.amount_refunded:
            raise ValueError("the refunds add up to more than amount_refunded")
        return self
