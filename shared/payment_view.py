"""The one representation of a payment in both HTTP APIs and the facade.

The command API answers a command with it, the query API and the facade read it: the same
fields whichever side answers (``formatted_amount`` for display, ``deleted_at`` set only
on a deleted payment, which only the command API can still show).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared.money import format_money
from shared.payment import PaymentSnapshot, PaymentStatus, Refund

EXAMPLE_PAYMENT = {
    "id": "pay_01J9Z3",
    "organization_id": "org_acme",
    "user_id": "user_42",
    "amount": 1250,
    "currency": "EUR",
    "formatted_amount": "12.50 EUR",
    "status": "completed",
    "description": "Cloud resources, March",
    "metadata": {"invoice": "INV-2026-03"},
    "version": 2,
    "created_at": "2026-03-01T10:00:00Z",
    "updated_at": "2026-03-01T10:00:05Z",
    "deleted_at": None,
    "expires_at": None,
    "amount_refunded": 0,
    "refunds": [],
}


class Payment(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_PAYMENT]})

    id: str
    organization_id: str
    user_id: str | None = None
    amount: int = Field(description="Minor units of the currency")
    currency: str
    status: PaymentStatus
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = Field(default=None, description="Set once the payment is deleted")
    expires_at: datetime | None = Field(default=None, description="Deadline: still processing then, the payment "
                                        "becomes expired (null: none)")
    amount_refunded: int = Field(default=0, description="Minor units refunded so far (the sum of `refunds`)")
    refunds: list[Refund] = Field(default_factory=list, description="The payment's refunds, oldest first")

    @computed_field(description="Amount in major units with the currency code, e.g. '12.50 EUR'")  # type: ignore[prop-decorator]
    @property
    def formatted_amount(self) -> str:
        return format_money(self.amount, self.currency)

    @classmethod
    def of(cls, snapshot: PaymentSnapshot) -> Payment:
        return cls(**snapshot.model_dump())
