"""What the webhooks wing passes around: endpoints and deliveries as the API shows them,
and the typed inputs and results of its Temporal workflow and activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Endpoint(BaseModel):
    id: str
    organization_id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = None
    previous_secret_until: datetime | None = Field(
        default=None, description="Until then the secret before the last rotation signs too")
    failing_since: datetime | None = None
    created_at: datetime
    updated_at: datetime


class Delivery(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str = Field(description="The webhook event name, e.g. `payment.created`")
    payment_id: str
    payment_version: int
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    completed_at: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    """An enabled endpoint, as the fan-out sees it: it gets the events it lists that happened
    after it was created (a consumer group reading old events sends it no history)."""

    endpoint_id: str
    events: list[str]
    created_at: datetime


@dataclass(frozen=True)
class NewDelivery:
    """One event for one endpoint, before it is recorded; ``payload`` is the body to POST."""

    organization_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    payment_id: str
    payment_version: int
    payload: bytes


@dataclass(frozen=True)
class AttemptView:
    """What one attempt needs: the delivery, its endpoint and its sealed secrets."""

    organization_id: str
    endpoint_id: str
    status: DeliveryStatus
    event_id: str
    event_type: str
    payload: bytes
    url: str | None  # None: the endpoint was deleted
    enabled: bool
    sealed_secrets: list[bytes]


@dataclass(frozen=True)
class PostAnswer:
    """How one POST went: a 2xx (``ok``), or the status and a short error."""

    ok: bool
    status_code: int | None
    error: str | None


# --------------------------------------------------------------------------- Temporal


class PaymentDeliveries(BaseModel):
    """One workflow per (endpoint, payment): its deliveries go out one at a time."""

    organization_id: str
    endpoint_id: str
    payment_id: str
    retry: RetryWindow
    # Carried over by continue-as-new.
    pending: list[DeliveryRef] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)


class RetryWindow(BaseModel):
    """From the settings when the workflow starts (a continued run keeps them)."""

    base_seconds: float = 10.0
    cap_seconds: float = 3600.0
    max_retry_seconds: float = 3 * 24 * 3600.0
    attempt_timeout_seconds: float = 120.0


class DeliveryRef(BaseModel):
    delivery_id: str
    payment_version: int
    generation: int = 0

    @property
    def key(self) -> str:
        return f"{self.delivery_id}/{self.generation}"


class AttemptInput(BaseModel):
    delivery_id: str
    attempt: int
    # Decided by the workflow before the attempt: what a failure means.
    retry_in_seconds: float
    give_up_if_failed: bool


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    GIVEN_UP = "given_up"  # failed, or the endpoint is gone or disabled: nothing more to do
    DONE_BEFORE = "done_before"  # a duplicate signal of a delivery already finished


class AttemptResult(BaseModel):
    outcome: AttemptOutcome
    status_code: int | None = None
    error: str | None = None


PaymentDeliveries.model_rebuild()
