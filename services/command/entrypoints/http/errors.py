"""The one mapping from a typed rejection to RFC 9457 problem+json: HTTP status, title
and problem type per :class:`~services.command.commands.RejectionKind`.

The HTTP answers, the batch results, the command status and the intake's ``rejected``
result events all take their problem from :func:`problem_of`.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.command.commands import Rejected, Rejection, RejectionKind
from shared.http import PROBLEM_BASE, PROBLEM_CONTENT_TYPE

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


def problem_of(rejection: Rejected | Rejection, instance: str | None = None) -> Problem:
    return Problem(
        type=PROBLEM_BASE + rejection.kind.value.replace("_", "-"),
        title=TITLES[rejection.kind],
        status=HTTP_STATUS[rejection.kind],
        detail=rejection.detail,
        instance=instance,
        current_version=rejection.current_version,
    )


def rejection_response(rejection: Rejected, instance: str) -> JSONResponse:
    problem = problem_of(rejection, instance)
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_CONTENT_TYPE)
