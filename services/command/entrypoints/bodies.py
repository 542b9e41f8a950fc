"""The bodies of the command side's two doors: what ``POST /v1/payments`` and ``PATCH
/v1/payments/{id}`` read, which are also the ``data`` of Kafka commands
(entrypoints/intake_contract.py), so both doors share one set of limits; and the shape of
the command ids a client names (payment ids: shared/payment.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.expiry import Deadline
from shared.money import Amount, Currency
from shared.payment import PAYMENT_ID_PATTERN, Description, Metadata, RefundReason, UserId

# A command id a client names: a Kafka command's ``id``, or the HTTP status path's (the ids
# the API builds from payment ids and digests, http/idempotency.py, fit it too).
MAX_COMMAND_ID_LENGTH = 200
COMMAND_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_COMMAND_ID_LENGTH - 1}}}$"

_AMOUNT_DOC = "Amount in minor units of the currency (cents; JPY has none), a positive integer"


def _whole_number(value: Any) -> Any:
    """JSON (and OpenAPI's ``integer``) does not tell 1250.0 from 1250: take a whole number
    written with a fraction as that integer; 12.5 still fails the strict integer check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
    amount: Amount = Field(description=_AMOUNT_DOC, examples=[1250])
    currency: Currency = Field(description="ISO 4217 upper-case code", examples=["EUR"])
    description: Description = ""
    metadata: Metadata = Field(default_factory=dict)
    user_id: UserId | None = Field(default=None, description="Paying user; defaults to the token's subject")
    expires_at: Deadline | None = None  # unset: PAYMENTS_PAYMENT_DEFAULT_TTL_SECONDS from now, if set

    _amount = field_validator("amount", mode="before")(_whole_number)


class UpdatePaymentRequest(BaseModel):
    """Body of ``PATCH /v1/payments/{id}``: the fields to change (at least one)."""

    # Fields may be omitted but not null (None only means "not sent"); at least one is sent.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": 1500, "description": "Invoice 2024-117, corrected"}],
                           "minProperties": 1},
    )

    amount: Amount = Field(None, description=_AMOUNT_DOC, examples=[1250])  # type: ignore[assignment]
    description: Description = Field(default=None)  # type: ignore[assignment]
    metadata: Metadata = Field(default=None, description="Replaces the whole metadata map")  # type: ignore[assignment]
    expires_at: Deadline = Field(default=None)  # type: ignore[assignment]  # moves the deadline

    _amount = field_validator("amount", mode="before")(_whole_number)

    @model_validator(mode="after")
    def _not_empty(self) -> UpdatePaymentRequest:
        if self.amount is None and self.description is None and self.metadata is None and self.expires_at is None:
            raise ValueError("send at least one of amount, description, metadata, expires_at")
        return self


REFUND_EXAMPLE = {"amount": 500, "reason": "One item returned"}


class RefundPaymentRequest(BaseModel):
    """Body of ``POST /v1/payments/{id}/refunds`` (and, with ``amount`` optional, the ``data``
    of a Kafka refund command)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [REFUND_EXAMPLE]})

    amount: Amount = Field(description="Minor units to refund, a positive integer at most what is left "
                           "(`amount` - `amount_refunded`)", examples=[500])
    reason: RefundReason = Field(default="", description="Why, for the record (kept with the refund)")

    _amount = field_validator("amount", mode="before")(_whole_number)
