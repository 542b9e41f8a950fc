"""The payment event contract: CloudEvents 1.0, structured JSON mode (DESIGN section 4).

Producers build events with :func:`new_event`; consumers parse bytes with
:func:`parse_event`, which raises :class:`InvalidEvent` with a readable reason (the
projector puts that reason on the dead-letter record). The JSON Schema of the envelope
is exported to ``docs/events.schema.json`` by ``payments schema``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.payment import MAX_ACTOR_LENGTH, NO_NUL_PATTERN, AwareDatetime, PaymentSnapshot, Refund, check_text

CONTENT_TYPE = "application/cloudevents+json"
# Who caused an event (extension ``actor``): the token's ``sub`` of an HTTP command, the
# CloudEvent ``source`` of a Kafka command, or ``system:<what>`` for the system's own acts.
# A producer's source may be a long URI, hence the bound (MAX_ACTOR_LENGTH, shared/payment.py).
SYSTEM_ACTOR_PREFIX = "system:"
UNKNOWN_ACTOR = "unknown"  # what the read side shows for events produced before actors existed
# Any command id the service layer runs (the ids clients name are shorter: entrypoints/bodies.py).
MAX_COMMAND_ID_LENGTH = 300
SCHEMA_ID = "https://gyroscops.com/schemas/payments/cloudevent.schema.json"
TYPE_PREFIX = "com.gyroscops.payment."
# W3C: a tracestate holds at most 512 characters (a traceparent of version 00, 55).
TRACE_FIELD_MAX_LENGTH = 512


def system_actor(what: str) -> str:
    """The actor of something the system does by itself, e.g. ``system:expiry``."""
    return f"{SYSTEM_ACTOR_PREFIX}{what}"


def _bounded_text(max_length: int) -> Any:
    return Annotated[str, AfterValidator(check_text),
                     Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": NO_NUL_PATTERN})]


Actor = _bounded_text(MAX_ACTOR_LENGTH)
CommandId = _bounded_text(MAX_COMMAND_ID_LENGTH)


def record_headers() -> list[tuple[str, bytes]]:
    """The headers of one structured-mode record: a fresh list for each record, since the
    Kafka instrumentation appends that record's ``traceparent`` to it."""
    return [("content-type", CONTENT_TYPE.encode())]


class EventType(StrEnum):
    CREATED = "com.gyroscops.payment.created"
    UPDATED = "com.gyroscops.payment.updated"
    STATUS_CHANGED = "com.gyroscops.payment.status_changed"
    DELETED = "com.gyroscops.payment.deleted"
    REFUNDED = "com.gyroscops.payment.refunded"  # a refund, partial or of all that was left

    @property
    def short(self) -> str:
        """``created``, ``updated``, ... (metric labels, logs)."""
        return self.value.removeprefix(TYPE_PREFIX)


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old: Any = None
    new: Any = None


class PaymentEventData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment: PaymentSnapshot = Field(description="Full snapshot of the payment after the event")
    changes: dict[str, FieldChange] = Field(
        default_factory=dict, description="Fields this event changed: {field: {old, new}}"
    )
    refund: Refund | None = Field(
        default=None, description="The refund a `refunded` event records (also the last of `payment.refunds`)")


class PaymentEvent(BaseModel):
    """A CloudEvents 1.0 envelope around a payment snapshot."""

    model_config = ConfigDict(
        extra="allow",  # CloudEvents allows other extension attributes
        json_schema_extra={"$id": SCHEMA_ID},
        title="PaymentCloudEvent",
    )

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, AfterValidator(check_text)] = Field(
        min_length=1, max_length=256, description="Unique event id (UUID); consumers dedupe on it",
        json_schema_extra={"pattern": NO_NUL_PATTERN})
    source: Annotated[str, AfterValidator(check_text)] = Field(
        min_length=1, max_length=1024, description="Producer URI, e.g. /payments/command",
        json_schema_extra={"pattern": NO_NUL_PATTERN})
    type: EventType
    subject: str = Field(min_length=1, description="The payment id")
    time: AwareDatetime = Field(description="RFC 3339 UTC")
    datacontenttype: Literal["application/json"] | None = "application/json"
    organizationid: str = Field(min_length=1, description="Extension: owning organization")
    paymentversion: int = Field(ge=1, strict=True, description="Extension: payment version after this event")
    actor: Actor | None = Field(
        default=None, description="Extension: who caused the event: the token's `sub` (HTTP command), the "
        "producer's CloudEvent `source` (Kafka command) or `system:<what>`; absent only on events produced "
        "before actors were recorded")
    commandid: CommandId | None = Field(
        default=None, description="Extension: id of the command that caused the event (GET /v1/commands/{id})")
    traceparent: str | None = Field(
        default=None, max_length=TRACE_FIELD_MAX_LENGTH,
        description="Extension (CloudEvents distributed tracing): W3C trace context of the command that "
        "caused the event, written with it in the outbox; the Kafka record's own traceparent header is the "
        "hop that published it. Tracing ignores a malformed one")
    tracestate: str | None = Field(default=None, max_length=TRACE_FIELD_MAX_LENGTH,
                                   description="Extension: the W3C tracestate that goes with traceparent")
    data: PaymentEventData

    @model_validator(mode="after")
    def _consistent(self) -> PaymentEvent:
        payment = self.data.payment
        if self.subject != payment.id:
            raise ValueError(f"subject {self.subject!r} is not the payment id {payment.id!r}")
        if self.organizationid != payment.organization_id:
            raise ValueError("organizationid does not match data.payment.organization_id")
        if self.paymentversion != payment.version:
            raise ValueError(
                f"paymentversion {self.paymentversion} does not match data.payment.version {payment.version}"
            )
        if (self.type is EventType.DELETED) != (payment.deleted_at is not None):
            raise ValueError("deleted events, and only they, carry data.payment.deleted_at")
        if (self.type is EventType.REFUNDED) != (self.data.refund is not None):
            raise ValueError("refunded events, and only they, carry data.refund")
        if self.data.refund is not None and self.data.refund not in payment.refunds:
            raise ValueError("data.refund is not one of data.payment.refunds")
        if self.type is EventType.CREATED and payment.version != 1:
            raise ValueError("a created event must carry version 1")
        return self

    @property
    def payment(self) -> PaymentSnapshot:
        return self.data.payment

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """An event that does not follow the contract; ``reason`` is for the DLQ headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_event(
    type_: EventType,
    payment: PaymentSnapshot,
    changes: dict[str, tuple[Any, Any]] | None = None,
    *,
    source: str = "/payments/command",
    actor: str | None = None,
    command_id: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
    trace: Mapping[str, str] | None = None,
    refund: Refund | None = None,
) -> PaymentEvent:
    """``trace``: the ``traceparent`` (and ``tracestate``) of the command that causes it."""
    return PaymentEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        actor=actor,
        commandid=command_id,
        type=type_,
        subject=payment.id,
        time=time or datetime.now(UTC),
        organizationid=payment.organization_id,
        paymentversion=payment.version,
        traceparent=(trace or {}).get("traceparent"),
        tracestate=(trace or {}).get("tracestate"),
        data=PaymentEventData(
            payment=payment,
            changes={k: FieldChange(old=o, new=n) for k, (o, n) in (changes or {}).items()},
            refund=refund,
        ),
    )


def describe_validation_error(error: ValidationError) -> str:
    """``"field: message; ..."`` for the first errors of a pydantic ValidationError (DLQ
    reasons of events and commands; the detail of a command's validation rejection)."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "event"
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts)


def structured_cloudevent(raw: bytes | str | None, error: type[ValueError]) -> dict[str, Any]:
    """The JSON object of a structured-mode CloudEvents 1.0 message (events and commands
    alike), or ``error(reason)`` saying why it is not one."""
    if raw is None or raw in (b"", ""):
        raise error("empty message value")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise error("a CloudEvent must be a JSON object (structured mode)")
    if payload.get("specversion") != "1.0":
        raise error(f"unsupported specversion {payload.get('specversion')!r}; expected '1.0'")
    return payload


def parse_event(raw: bytes | str | None) -> PaymentEvent:
    """Bytes from Kafka -> a valid PaymentEvent, or :class:`InvalidEvent` saying why."""
    payload = structured_cloudevent(raw, InvalidEvent)
    if isinstance(payload.get("type"), str) and payload["type"] not in set(EventType):
        raise InvalidEvent(f"unknown event type {payload['type']!r}")
    try:
        return PaymentEvent.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


def event_json_schema() -> dict[str, Any]:
    schema = PaymentEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["description"] = (
        "CloudEvents 1.0 structured-mode envelope of a payment event (payments-cqs DESIGN section 4)."
    )
    return schema


def event_json_schema_text() -> str:
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
