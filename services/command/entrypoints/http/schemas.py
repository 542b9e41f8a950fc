"""What the command API answers and documents: the batch body, the HTTP views of results
(the service layer's results become them here: :meth:`BatchResult.of`) and the OpenAPI
response documents. The bodies both doors read are entrypoints/bodies.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.command.commands import BulkCreateResult, CommandState
from services.command.entrypoints.bodies import CREATE_EXAMPLE, CreatePaymentRequest
from services.command.entrypoints.http.headers import TOKEN_HEADER_DOC
from services.command.entrypoints.problems import Problem, problem_of
from shared.http import PROBLEM_CONTENT_TYPE
from shared.payment_view import Payment

CONSISTENCY_TOKEN_DOC = ("Pass to the query side as `consistent_with` to read your write: the answer waits "
                         "until the read model reflects it (see docs/query-service.md)")


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
