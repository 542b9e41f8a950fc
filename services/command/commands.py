"""Typed inputs and results of the command service.

HTTP request bodies (``*Request``), the commands the workflows run (``CreatePayment``,
``UpdatePayment``, ...) and their results. Pure pydantic, safe to import in workflows.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.money import CURRENCY_SCHEMA, MAX_AMOUNT, validate_currency
from shared.payment import (
    MAX_ID_LENGTH,
    Description,
    Metadata,
    PaymentCommand,
    PaymentSnapshot,
    UserId,
)
from shared.payment_view import Payment

PAYMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
# Command ids are built from payment ids and digests (services/command/http/app.py).
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"

_AMOUNT_DOC = "Amount in minor units of the currency (cents; JPY has none), a positive integer"


def _amount_field(default: Any = ...) -> Any:
    return Field(default, gt=0, le=MAX_AMOUNT, strict=True, description=_AMOUNT_DOC, examples=[1250])


def _whole_number(value: Any) -> Any:
    """JSON (and OpenAPI's ``integer``) does not tell 1250.0 from 1250: take a whole number
    written with a fraction as that integer; 12.5 still fails the strict integer check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_currency(value: str) -> str:
    return validate_currency(value)


# --------------------------------------------------------------------------- HTTP bodies

CREATE_EXAMPLE = {
    "amount": 1250,
    "currency": "EUR",
    "description": "Invoice 2024-117, cloud resources",
    "metadata": {"invoice": "2024-117"},
    "user_id": "user-42",
}


class CreatePaymentRequest(BaseModel):
    """Body of ``POST /v1/payments`` (and of each item of a batch)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [CREATE_EXAMPLE]})

    id: str | None = Field(
        default=None, pattern=PAYMENT_ID_PATTERN,
        description="Optional client-chosen payment id (globally unique). Generated when absent; "
        "derived from the Idempotency-Key when one is sent.",
    )
    amount: int = _amount_field()
    currency: str = Field(description="ISO 4217 upper-case code", examples=["EUR"], json_schema_extra=CURRENCY_SCHEMA)
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)
    user_id: UserId | None = Field(default=None, description="Paying user; defaults to the token's subject")

    _amount = field_validator("amount", mode="before")(_whole_number)
    _currency = field_validator("currency")(_check_currency)


class UpdatePaymentRequest(BaseModel):
    """Body of ``PATCH /v1/payments/{id}``: the fields to change (at least one)."""

    # Fields may be omitted but not null (None only means "not sent"); at least one is sent.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": 1500, "description": "Invoice 2024-117, corrected"}],
                           "minProperties": 1},
    )

    amount: int = _amount_field(None)
    description: Description = Field(default=None)  # type: ignore[assignment]
    metadata: Metadata = Field(default=None, description="Replaces the whole metadata map")  # type: ignore[assignment]

    _amount = field_validator("amount", mode="before")(_whole_number)

    @model_validator(mode="after")
    def _not_empty(self) -> UpdatePaymentRequest:
        if self.amount is None and self.description is None and self.metadata is None:
            raise ValueError("send at least one of amount, description, metadata")
        return self


class BatchCreateRequest(BaseModel):
    """Body of ``POST /v1/payments/batch``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"items": [CREATE_EXAMPLE, {"amount": 900, "currency": "JPY"}]}]},
    )

    items: list[CreatePaymentRequest] = Field(min_length=1, max_length=1000)


# --------------------------------------------------------------------------- commands


class CommandBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: str = Field(min_length=1, max_length=300, description="Public command id")
    organization_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)


class CreatePayment(CommandBase):
    kind: Literal["create"] = "create"
    payment_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    user_id: str | None = None
    # Deliberately loose here: the rules validate, so that a non-HTTP caller of the facade
    # gets the same typed rejection as the API.
    amount: int
    currency: str
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModifyPayment(CommandBase):
    """A command on an existing payment: update, a status transition or delete."""

    kind: Literal["modify"] = "modify"
    action: PaymentCommand
    payment_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    expected_version: int | None = Field(default=None, ge=1)
    # update only: the fields to change (None = unchanged)
    amount: int | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class BulkCreatePayments(CommandBase):
    kind: Literal["bulk_create"] = "bulk_create"
    items: list[CreatePayment] = Field(min_length=1)


Command = CreatePayment | ModifyPayment | BulkCreatePayments


def command_type(command: Command) -> str:
    """Metric label / log field: create, update, complete, ..., delete, bulk_create."""
    if isinstance(command, ModifyPayment):
        return str(command.action)
    return command.kind


# --------------------------------------------------------------------------- results


class RejectionKind(StrEnum):
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    VERSION_MISMATCH = "version_mismatch"
    CONFLICT = "conflict"


HTTP_STATUS: dict[RejectionKind, int] = {
    RejectionKind.VALIDATION: 422,
    RejectionKind.NOT_FOUND: 404,
    RejectionKind.ILLEGAL_TRANSITION: 409,
    RejectionKind.VERSION_MISMATCH: 412,
    RejectionKind.CONFLICT: 409,
}

TITLES: dict[RejectionKind, str] = {
    RejectionKind.VALIDATION: "Invalid command",
    RejectionKind.NOT_FOUND: "Payment not found",
    RejectionKind.ILLEGAL_TRANSITION: "Command not allowed in this status",
    RejectionKind.VERSION_MISMATCH: "Version mismatch",
    RejectionKind.CONFLICT: "Conflict",
}


class Problem(BaseModel):
    """RFC 9457 problem details (as in every error response)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    current_version: int | None = None


CONSISTENCY_TOKEN_DOC = ("Pass to the query side as `consistent_with` to read your write: the answer waits "
                         "until the read model reflects it (see docs/query-service.md)")


class CommandResult(BaseModel):
    command_id: str
    payment: PaymentSnapshot
    # Stamped by PaymentCommandClient, not by the workflow (the secret stays out of history).
    consistency_token: str | None = Field(default=None, description=CONSISTENCY_TOKEN_DOC)

    def written(self) -> list[PaymentSnapshot]:
        return [self.payment]


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="HTTP status this item alone would have had (201, 409, 422, ...)")
    payment: Payment | None = None
    problem: Problem | None = None


class BatchResult(BaseModel):
    command_id: str
    results: list[BatchItemResult]
    consistency_token: str | None = Field(default=None, description=CONSISTENCY_TOKEN_DOC + "; names every "
                                          "payment the batch created")

    def written(self) -> list[PaymentSnapshot]:
        return [r.payment for r in self.results if r.payment is not None and r.status < 300]


class CommandState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class CommandStatus(BaseModel):
    """Body of ``GET /v1/commands/{command_id}`` and of a 202 answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"command_id": "create-7b0c9d2e", "status": "running",
                 "status_url": "/v1/commands/create-7b0c9d2e"},
            ]
        }
    )

    command_id: str
    status: CommandState
    status_url: str
    result: Payment | BatchResult | None = None
    problem: Problem | None = None
