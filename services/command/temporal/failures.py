"""A business rejection across Temporal, in one place: an ``ApplicationError`` whose
``type`` is a ``RejectionKind``, non-retryable, carrying the payment's current version.
The activities and the workflows' validate step raise it, the workflows pass it on as
their own failure, the retry policy never retries it, and the client reads it back as
the ``Rejected`` it was.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from services.command.commands import Rejected, RejectionKind

# Error types the execute step's retry policy does not retry.
NON_RETRYABLE = [kind.value for kind in RejectionKind]


def application_error(rejection: Rejected) -> ApplicationError:
    details = {"current_version": rejection.current_version}
    if rejection.remaining is not None:
        details["remaining"] = rejection.remaining
    return ApplicationError(rejection.detail, details, type=rejection.kind.value, non_retryable=True)


def rejection_of(error: BaseException | None) -> Rejected | None:
    """The business rejection an error carries (itself or among its causes), if any."""
    while error is not None and not isinstance(error, ApplicationError):
        error = getattr(error, "cause", None) or error.__cause__
    if not isinstance(error, ApplicationError) or error.type not in NON_RETRYABLE:
        return None
    details = error.details[0] if error.details and isinstance(error.details[0], dict) else {}
    return Rejected(RejectionKind(error.type), error.message, current_version=details.get("current_version"),
                    remaining=details.get("remaining"))
