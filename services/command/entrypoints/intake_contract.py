"""The Kafka command contract, pure: a command CloudEvent's bytes become the typed command
the HTTP API would build (same bodies, same limits), or ``MalformedCommand`` (nothing to
answer: dead-lettered) or ``InvalidCommand`` (answered with a 422 problem, nothing
written); :func:`result_event` is the one result per command.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.command.commands import Command, CreatePayment, ModifyPayment
from services.command.entrypoints.bodies import (
    MAX_COMMAND_ID_LENGTH,
    CreatePaymentRequest,
    RefundPaymentRequest,
    UpdatePaymentRequest,
)
from services.command.entrypoints.problems import Problem, invalid_body
from shared.events import Actor, describe_validation_error, structured_cloudevent
from shared.expiry import ExpiryPolicy
from shared.money import Amount
from shared.payment import MAX_ID_LENGTH, PAYMENT_ID_PATTERN, PaymentAction, PaymentSnapshot
from shared.settings import Settings

COMMAND_TYPE_PREFIX = "com.gyroscops.payment.command."
# Payment ids derived from a create's command id (no subject) live in their own namespace.
_DERIVED_ID_NAMESPACE = uuid.UUID("9d3f0c59-4a7e-4f55-8d0e-2b6f3c1a7e42")
_RESULT_ID_NAMESPACE = uuid.UUID("5b1e2f9a-8c4d-4e1b-9f6a-0d7c3e2a1b55")


class CommandType(StrEnum):
    CREATE = COMMAND_TYPE_PREFIX + "create"
    UPDATE = COMMAND_TYPE_PREFIX + "update"
    COMPLETE = COMMAND_TYPE_PREFIX + "complete"
    FAIL = COMMAND_TYPE_PREFIX + "fail"
    CANCEL = COMMAND_TYPE_PREFIX + "cancel"
    REFUND = COMMAND_TYPE_PREFIX + "refund"
    DELETE = COMMAND_TYPE_PREFIX + "delete"

    @property
    def short(self) -> str:
        return self.value.removeprefix(COMMAND_TYPE_PREFIX)


class ResultType(StrEnum):
    SUCCEEDED = COMMAND_TYPE_PREFIX + "succeeded"
    REJECTED = COMMAND_TYPE_PREFIX + "rejected"


# --------------------------------------------------------------------------- command data


class UpdateCommandData(UpdatePaymentRequest):
    """``data`` of an update command: the HTTP PATCH body plus the If-Match version."""

    expected_version: int | None = Field(default=None, ge=1, strict=True,
                                         description="Refuse (412) unless the payment is at this version")


class TransitionCommandData(BaseModel):
    """``data`` of complete / fail / cancel / refund / delete (may be absent)."""

    model_config = ConfigDict(extra="forbid")

    expected_version: int | None = Field(default=None, ge=1, strict=True,
                                         description="Refuse (412) unless the payment is at this version")


class RefundCommandData(RefundPaymentRequest):
    """``data`` of a refund: the body of POST /v1/payments/{id}/refunds, ``amount`` optional
    (absent: all that is left, as POST /v1/payments/{id}/refund), plus the If-Match version."""

    amount: Amount | None = Field(default=None, description="Minor units to refund, at most what is left; "  # type: ignore[assignment]
                                  "absent: all that is left")
    expected_version: int | None = Field(default=None, ge=1, strict=True,
                                         description="Refuse (412) unless the payment is at this version")


DATA_MODELS: dict[CommandType, type[BaseModel]] = {
    CommandType.CREATE: CreatePaymentRequest,
    CommandType.UPDATE: UpdateCommandData,
    CommandType.REFUND: RefundCommandData,
    **{t: TransitionCommandData for t in CommandType
       if t not in (CommandType.CREATE, CommandType.UPDATE, CommandType.REFUND)},
}


class PaymentCommandEvent(BaseModel):
    """A command on ``payments.commands``: a CloudEvents 1.0 envelope (structured mode)."""

    model_config = ConfigDict(extra="allow", title="PaymentCommandCloudEvent")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=MAX_COMMAND_ID_LENGTH,
                    description="The command id: a re-sent or redelivered command runs once")
    source: Actor = Field(description="Producer URI, e.g. /billing/invoicing; the actor of the events the "
                          "command causes")
    type: CommandType
    subject: str | None = Field(
        default=None, pattern=PAYMENT_ID_PATTERN,
        description="The payment id; optional for create (then derived from the command id)")
    time: datetime | None = None
    datacontenttype: Literal["application/json"] | None = None
    organizationid: str = Field(min_length=1, max_length=MAX_ID_LENGTH,
                                description="Extension: the organization that owns the payment")
    data: dict[str, Any] | None = Field(
        default=None, description="The HTTP command's body: create = POST /v1/payments body; update = PATCH "
        "body plus optional expected_version; refund: optional amount (default: all that is left), reason and "
        "expected_version; others: optional expected_version")
    traceparent: str | None = Field(
        default=None, description="Extension (CloudEvents distributed tracing): the producer's W3C trace "
        "context; the intake continues it when the record has no traceparent header, and links to it "
        "otherwise. Tracing ignores a malformed one")
    tracestate: str | None = Field(default=None, description="Extension: the W3C tracestate that goes with traceparent")


# --------------------------------------------------------------------------- parsing


class MalformedCommand(ValueError):
    """Not an addressable command: dead-lettered with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCommand(ValueError):
    """An addressable command that breaks the contract: answered with a 422 problem."""

    def __init__(self, command_id: str, organization_id: str, subject: str | None, detail: str) -> None:
        super().__init__(detail)
        self.command_id = command_id
        self.organization_id = organization_id
        self.subject = subject
        self.detail = detail

    def problem(self) -> Problem:
        return invalid_body(self.detail)


def derived_payment_id(org: str, command_id: str) -> str:
    """A create without subject: the payment id follows from the command id, per organization."""
    return str(uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{org}\n{command_id}"))


def _addressable(raw: bytes | None) -> dict[str, Any]:
    payload = structured_cloudevent(raw, MalformedCommand)
    cid, org, kind = payload.get("id"), payload.get("organizationid"), payload.get("type")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_COMMAND_ID_LENGTH:
        raise MalformedCommand(f"id: the command id must be a string of 1 to {MAX_COMMAND_ID_LENGTH} characters")
    if not isinstance(org, str) or not 0 < len(org) <= MAX_ID_LENGTH:
        raise MalformedCommand(f"organizationid: the owning organization must be a string of 1 to "
                               f"{MAX_ID_LENGTH} characters")
    if kind not in set(CommandType):
        raise MalformedCommand(f"unknown command type {kind!r}; expected {COMMAND_TYPE_PREFIX}<"
                               + "|".join(t.short for t in CommandType) + ">")
    return payload


def parse_command(raw: bytes | None, policy: ExpiryPolicy | None = None, now: datetime | None = None) -> Command:
    """Bytes from Kafka -> CreatePayment | ModifyPayment (see the module docstring). A
    deadline follows ``policy`` (default: the settings' defaults) at ``now`` (default: now)."""
    policy = policy or Settings.model_construct().expiry_policy()
    now = now or datetime.now(UTC)
    payload = _addressable(raw)
    cid, org = payload["id"], payload["organizationid"]
    subject = payload.get("subject") if isinstance(payload.get("subject"), str) else None
    try:
        envelope = PaymentCommandEvent.model_validate(payload)
        data = DATA_MODELS[envelope.type].model_validate(envelope.data or {})
    except ValidationError as exc:
        raise InvalidCommand(cid, org, subject, describe_validation_error(exc)) from None
    if envelope.type is CommandType.CREATE:
        assert isinstance(data, CreatePaymentRequest)
        if data.id is not None and envelope.subject not in (None, data.id):
            raise InvalidCommand(cid, org, subject, f"data.id {data.id!r} differs from subject {subject!r}")
        payment_id = envelope.subject or data.id or derived_payment_id(org, cid)
        expires_at = _deadline(cid, org, subject, lambda: policy.for_create(data.expires_at, now))
        return CreatePayment(command_id=cid, organization_id=org, actor=envelope.source, payment_id=payment_id,
                             user_id=data.user_id, amount=data.amount, currency=data.currency, description=data.description,
                             metadata=data.metadata, expires_at=expires_at)
    if envelope.subject is None:
        raise InvalidCommand(cid, org, None, f"subject: the payment id is required for {envelope.type.short}")
    fields = data.model_dump(exclude_unset=True)
    if fields.get("expires_at") is not None:
        fields["expires_at"] = _deadline(cid, org, subject, lambda: policy.check(fields["expires_at"], now))
    return ModifyPayment(command_id=cid, organization_id=org, actor=envelope.source,
                         action=PaymentAction(envelope.type.short), payment_id=envelope.subject, **fields)


def _deadline(cid: str, org: str, subject: str | None, rule: Callable[[], datetime | None]) -> datetime | None:
    try:
        return rule()
    except ValueError as exc:
        raise InvalidCommand(cid, org, subject, f"expires_at: {exc}") from None


# --------------------------------------------------------------------------- results


class CommandResultEvent(BaseModel):
    """One result per command on ``payments.command-results``."""

    model_config = ConfigDict(extra="allow", title="PaymentCommandResultCloudEvent")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Deterministic per (organization, command): a re-published result has the same id")
    source: str
    type: ResultType
    subject: str | None = Field(default=None, description="The payment id")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    organizationid: str
    commandid: str = Field(description="Extension: the command's CloudEvent id")
    consistencytoken: str | None = Field(
        default=None, description="Extension (succeeded only): the write's consistency token; pass it as "
        "consistent_with to the query API to read this write")
    traceparent: str | None = Field(
        default=None, description="Extension (CloudEvents distributed tracing): W3C trace context of the "
        "intake's handling of the command, which continues the command's")
    tracestate: str | None = Field(default=None, description="Extension: the W3C tracestate that goes with traceparent")
    data: PaymentSnapshot | Problem = Field(description="succeeded: the payment snapshot; rejected: RFC 9457 problem")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def result_event(org: str, command_id: str, subject: str | None, outcome: PaymentSnapshot | Problem, *,
                 source: str) -> CommandResultEvent:
    return CommandResultEvent(
        id=str(uuid.uuid5(_RESULT_ID_NAMESPACE, f"{org}\n{command_id}")),
        source=source,
        type=ResultType.SUCCEEDED if isinstance(outcome, PaymentSnapshot) else ResultType.REJECTED,
        subject=subject, time=datetime.now(UTC), organizationid=org, commandid=command_id, data=outcome,
    )


def label_of(raw: bytes | None) -> str:
    """Metric label: the short command type or ``unknown`` (bounded cardinality)."""
    try:
        kind = json.loads(raw or b"").get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "unknown"
    return CommandType(kind).short if kind in set(CommandType) else "unknown"
