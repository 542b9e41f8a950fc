"""What the command API reads and writes: request bodies, the HTTP views of results and
the OpenAPI response documents (the problem model is services/command/entrypoints/http/errors.py).

The bodies are also the ``data`` of Kafka commands (services/command/entrypoints/intake_contract.py):
one set of limits for both doors. The service layer's results (services/command/commands.py)
become these views at the edge (:meth:`BatchResult.of`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.command.commands import BulkCreateResult, CommandState
from services.command.entrypoints.http.errors import Problem, problem_of
from services.command.entrypoints.http.headers import TOKEN_HEADER_DOC
from shared.http import PROBLEM_CONTENT_TYPE
from shared.money import Amount, Currency
from shared.payment import Description, Metadata, UserId
from shared.payment_view import Payment

PAYMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
# Command ids are built from payment ids and digests (services/command/entrypoints/http/idempotency.py).
COMMAND_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"

_AMOUNT_DOC = "Amount in minor units of the currency (cents; JPY has none), a positive integer"
CONSISTENCY_TOKEN_DOC = ("Pass to the query side as `consistent_with` to read your write: the answer waits "
                         "until the read model reflects it (see docs/query-service.md)")


def _whole_number(value: Any) -> Any:
    """JSON (and OpenAPI's ``integer``) does not tell 1250.0 from 1250: take a whole number
    written with a fraction as that integer; 12.5 still fails the strict integer check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# --------------------------------------------------------------------------- request bodies

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


# --------------------------------------------------------------------------- answers


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="HTTP status this item alone would have had (201, 409, 422, ...)")
    payment: Payment | None = None
    problem: Problem | None = None


# The HTTP view of a BulkCreateResult (no docstring: it would become the schema's description).
class BatchResult(BaseModel):
    command_id: str
    results: list[BatchItemResult]
    consistency_token: str | None = Field(default=None, description=CONSISTENCY_TOKEN_DOC + "; names every "
                                          "payment the batch created")

    @classmethod
    def of(cls, result: BulkCreateResult) -> BatchResult:
        results = []
        for item in result.items:
            if item.payment is not None:
                results.append(BatchItemResult(index=item.index, status=201, payment=Payment.of(item.payment)))
            else:
                assert item.rejection is not None
                problem = problem_of(item.rejection)
                results.append(BatchItemResult(index=item.index, status=problem.status, problem=problem))
        return cls(command_id=result.command_id, results=results, consistency_token=result.consistency_token)


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


# --------------------------------------------------------------------------- OpenAPI documents


def problem_doc(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


COMMON_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: problem_doc("Malformed JSON body or a malformed If-Match header"),
    401: problem_doc("Missing or invalid bearer token"),
    403: problem_doc("The token lacks the payments:write scope"),
    409: problem_doc("Conflict: illegal status transition, id taken, or Idempotency-Key reused"),
    413: problem_doc("Request body larger than 1 MiB"),
    422: problem_doc("Invalid request or command (detail says which field and why)"),
}
MODIFY_PROBLEMS = {**COMMON_PROBLEMS, 404: problem_doc("No such payment in your organization"),
                   412: problem_doc("If-Match does not match the payment's version")}
ACCEPTED_DOC = {202: {"model": CommandStatus, "description": "Accepted (Prefer: respond-async, or still running)"}}


def written_doc(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """A success that wrote: it carries the Consistency-Token header."""
    return {status: {"description": description, "headers": TOKEN_HEADER_DOC}}
