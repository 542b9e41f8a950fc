"""The typed commands the workflows run, their results and their refusals (:class:`Rejected`,
of a :class:`RejectionKind`): the service layer's language.

Pure pydantic, safe to import in workflows; nothing here knows HTTP (the HTTP bodies and
views are services/command/entrypoints/http/schemas.py). A result is stored in Temporal's history:
change a field only in a way old histories still read (see :class:`BulkCreateResult`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import MAX_COMMAND_ID_LENGTH, TRACE_FIELD_MAX_LENGTH, Actor
from shared.payment import MAX_ID_LENGTH, PAYMENT_ID_PATTERN, PaymentAction, PaymentSnapshot

# --------------------------------------------------------------------------- commands


class RejectionKind(StrEnum):
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    VERSION_MISMATCH = "version_mismatch"
    CONFLICT = "conflict"
    REFUND_EXCEEDS_REMAINING = "refund_exceeds_remaining"


class Rejected(Exception):
    """A business rejection: the command is refused and nothing is written."""

    def __init__(self, kind: RejectionKind, detail: str, *, current_version: int | None = None,
                 remaining: int | None = None) -> None:
        super().__init__(detail)
        self.kind = RejectionKind(kind)
        self.detail = detail
        self.current_version = current_version
        self.remaining = remaining  # a refund beyond what is left: what is left (minor units)


class CommandBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: str = Field(min_length=1, max_length=MAX_COMMAND_ID_LENGTH, description="Public command id")
    organization_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    # Who sent it (the events' ``actor``): set by every door; None only in inputs recorded
    # before actors existed, which Temporal histories still hold.
    actor: Actor | None = None
    # The trace context of whoever sent it (W3C; shared/tracing.py stamps it), which its
    # event carries: a command in a group-committed batch keeps its own.
    traceparent: str | None = Field(default=None, max_length=TRACE_FIELD_MAX_LENGTH)
    tracestate: str | None = Field(default=None, max_length=TRACE_FIELD_MAX_LENGTH)

    def trace(self) -> dict[str, str]:
        """``traceparent`` / ``tracestate``, those that are set (what its event carries)."""
        return {k: v for k, v in (("traceparent", self.traceparent), ("tracestate", self.tracestate)) if v}


class CreatePayment(CommandBase):
    kind: Literal["create"] = "create"
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    user_id: str | None = None
    # Deliberately loose here: the rules validate, so that a non-HTTP caller of the facade
    # gets the same typed rejection as the API.
    amount: int
    currency: str
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    # The deadline, as the door decided it (ExpiryPolicy: asked for, or the default).
    expires_at: datetime | None = None


class ModifyPayment(CommandBase):
    """A command on an existing payment: update, a status transition or delete."""

    kind: Literal["modify"] = "modify"
    action: PaymentAction
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    expected_version: int | None = Field(default=None, ge=1)
    # update: the fields to change (None = unchanged); refund: ``amount`` to refund (None =
    # all that is left) and its ``reason``.
    amount: int | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None  # moves the deadline (checked by the door)
    reason: str | None = None


class BulkCreatePayments(CommandBase):
    kind: Literal["bulk_create"] = "bulk_create"
    items: list[CreatePayment] = Field(min_length=1)


class CommandBatch(BaseModel):
    """Group commit (temporal/group_commit.py): commands of any organizations that arrived
    while another execution was in flight, run in arrival order in one transaction, each
    still its own command (id claim, rules, result, outbox row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str = Field(min_length=1, max_length=MAX_COMMAND_ID_LENGTH)
    items: list[Annotated[CreatePayment | ModifyPayment, Field(discriminator="kind")]] = Field(min_length=1)


Command = CreatePayment | ModifyPayment | BulkCreatePayments


def with_actor(command: Command, actor: str) -> Command:
    """``command`` recorded as sent by ``actor`` (its items too), unless it names its own."""
    if isinstance(command, BulkCreatePayments):
        items = [with_actor(item, actor) for item in command.items]
        return command.model_copy(update={"items": items, "actor": command.actor or actor})
    return command if command.actor else command.model_copy(update={"actor": actor})


def command_type(command: Command) -> str:
    """Metric label / log field: create, update, complete, ..., delete, bulk_create."""
    if isinstance(command, ModifyPayment):
        return str(command.action)
    return command.kind


class ExpiryTimer(BaseModel):
    """A payment's deadline as its timer (a PaymentExpiry workflow) knows it, with the
    payment version that set it (1: the create's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    organization_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    expires_at: datetime
    version: int = Field(ge=1)


class ExpiryTimers(BaseModel):
    """Timers: those a command's workflow schedules once its write has committed, and
    those one PaymentExpiry workflow waits for (temporal/expiry.py)."""

    timers: list[ExpiryTimer] = Field(min_length=1)


def expiry_timers(command: Command | CommandBatch, result: Any) -> list[ExpiryTimer]:
    """The deadlines ``command``'s committed ``result`` set: each created payment with one,
    each update that moved one. Pure (run in the workflows)."""
    pairs: list[tuple[Any, Any]]
    if isinstance(command, CommandBatch):
        pairs = list(zip(command.items, result.items, strict=True))
    elif isinstance(command, BulkCreatePayments):
        pairs = [(command.items[item.index], item) for item in result.items]
    else:
        pairs = [(command, result)]
    timers = []
    for cmd, outcome in pairs:
        payment = getattr(outcome, "payment", None)
        if payment is None or payment.expires_at is None:
            continue  # refused, or no deadline
        if isinstance(cmd, ModifyPayment) and (cmd.action is not PaymentAction.UPDATE or cmd.expires_at is None):
            continue  # did not move it
        timers.append(ExpiryTimer(organization_id=payment.organization_id, payment_id=payment.id,
                                  expires_at=payment.expires_at, version=payment.version))
    return timers


# --------------------------------------------------------------------------- results


class CommandResult(BaseModel):
    command_id: str
    payment: PaymentSnapshot
    # Stamped by PaymentCommandClient, not by the workflow (the secret stays out of history);
    # pass it to the query side as `consistent_with` to read this write.
    consistency_token: str | None = None

    def written(self) -> list[PaymentSnapshot]:
        return [self.payment]


class Rejection(BaseModel):
    """A :class:`Rejected` as data, for a result that holds several outcomes."""

    kind: RejectionKind
    detail: str
    current_version: int | None = None
    remaining: int | None = None

    @classmethod
    def of(cls, rejected: Rejected) -> Rejection:
        return cls(kind=rejected.kind, detail=rejected.detail, current_version=rejected.current_version,
                   remaining=rejected.remaining)

    def error(self) -> Rejected:
        return Rejected(self.kind, self.detail, current_version=self.current_version, remaining=self.remaining)


class BulkItemResult(BaseModel):
    """One item of a bulk create: the payment it created, or why it was refused."""

    index: int
    payment: PaymentSnapshot | None = None
    rejection: Rejection | None = None


class BulkCreateResult(BaseModel):
    command_id: str
    items: list[BulkItemResult]
    consistency_token: str | None = None  # as CommandResult's; names every payment created

    def written(self) -> list[PaymentSnapshot]:
        return [item.payment for item in self.items if item.payment is not None]

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_issue_8(cls, data: Any) -> Any:
        """Histories written before the HTTP view left the service layer hold
        ``results: [{index, status, payment (the HTTP view), problem}]``: read them as items."""
        if not isinstance(data, dict) or "results" not in data or "items" in data:
            return data
        items = []
        for old in data["results"]:
            payment, problem = old.get("payment"), old.get("problem")
            item: dict[str, Any] = {"index": old["index"]}
            if payment is not None and old.get("status", 201) < 300:
                item["payment"] = {k: v for k, v in payment.items() if k != "formatted_amount"}
            elif problem is not None:  # its type ends with the kind: .../version-mismatch
                item["rejection"] = {"kind": problem["type"].rsplit("/", 1)[-1].replace("-", "_"),
                                     "detail": problem["detail"], "current_version": problem.get("current_version")}
            items.append(item)
        return {**{k: v for k, v in data.items() if k != "results"}, "items": items}


class CommandBatchResult(BaseModel):
    """One outcome per item of a :class:`CommandBatch`, in its order: the item's own
    result, or why it was refused (its savepoint rolled back, nothing of it written)."""

    batch_id: str
    items: list[CommandResult | Rejection]


class ExpiryOutcome(BaseModel):
    """What timers firing did: the payments they expired, and the timers that fired before
    their deadline on the database's clock (to wait for again). The others expired
    nothing: their payment settled, went, or has another deadline by now."""

    expired: list[PaymentSnapshot] = Field(default_factory=list)
    early: list[ExpiryTimer] = Field(default_factory=list)


class CommandState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
