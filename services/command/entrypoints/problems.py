"""RFC 9457 problems of the command side: the one mapping from a typed rejection to its
HTTP status, title and problem type. The HTTP answers, the batch results, the command
status and the intake's ``rejected`` results all take their problem from here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.command.commands import Rejected, Rejection, RejectionKind
from shared.http import PROBLEM_BASE

HTTP_STATUS: dict[RejectionKind, int] = {
    RejectionKind.VALIDATION: 422,
    RejectionKind.NOT_FOUND: 404,
    RejectionKind.ILLEGAL_TRANSITION: 409,
    RejectionKind.VERSION_MISMATCH: 412,
    RejectionKind.CONFLICT: 409,
    RejectionKind.REFUND_EXCEEDS_REMAINING: 409,
}

TITLES: dict[RejectionKind, str] = {
    RejectionKind.VALIDATION: "Invalid command",
    RejectionKind.NOT_FOUND: "Payment not found",
    RejectionKind.ILLEGAL_TRANSITION: "Command not allowed in this status",
    RejectionKind.VERSION_MISMATCH: "Version mismatch",
    RejectionKind.CONFLICT: "Conflict",
    RejectionKind.REFUND_EXCEEDS_REMAINING: "Refund exceeds what is left",
}


class Problem(BaseModel):
    """RFC 9457 problem details (as in every error response)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    current_version: int | None = None
    remaining: int | None = Field(default=None, description="A refund beyond what is left: the minor units "
                                  "that may still be refunded")


def problem_of(rejection: Rejected | Rejection, instance: str | None = None) -> Problem:
    return Problem(
        type=PROBLEM_BASE + rejection.kind.value.replace("_", "-"),
        title=TITLES[rejection.kind],
        status=HTTP_STATUS[rejection.kind],
        detail=rejection.detail,
        instance=instance,
        current_version=rejection.current_version,
        remaining=rejection.remaining,
    )


def invalid_body(detail: str) -> Problem:
    """A command whose body breaks the contract (the 422 a schema error gets)."""
    return Problem(type=PROBLEM_BASE + "validation-error", title="Unprocessable Content", status=422,
                   detail=detail)
