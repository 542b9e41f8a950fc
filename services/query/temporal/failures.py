"""The query failures a caller must tell apart, across Temporal, in one place: a read
model still behind the writes a read waits for (``NotCaughtUp``), and a consistency token
that is not one of this deployment's (``InvalidConsistencyToken``) or not the caller's
(``ForeignConsistencyToken``). The activities raise them as non-retryable
``ApplicationError``s (a retry would only wait the bound again) whose ``type`` is the
exception's name; the client raises them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from services.query.handlers import NotCaughtUp
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken

_TOKEN_ERRORS = {cls.__name__: cls for cls in (InvalidConsistencyToken, ForeignConsistencyToken)}


@contextmanager
def as_application_errors() -> Iterator[None]:
    """Around an activity: these failures leave it as typed, non-retryable errors."""
    try:
        yield
    except NotCaughtUp as exc:
        raise ApplicationError(str(exc), {"behind": exc.behind, "waited": exc.waited},
                               type=NotCaughtUp.__name__, non_retryable=True) from None
    except (InvalidConsistencyToken, ForeignConsistencyToken) as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


def raised_by_activity(error: BaseException) -> Exception | None:
    """The exception :func:`as_application_errors` turned into a workflow failure, if any."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None) or cause.__cause__
    if cause is None:
        return None
    if cause.type == NotCaughtUp.__name__ and cause.details:
        details = cause.details[0]
        return NotCaughtUp(details["behind"], details["waited"])
    if cause.type in _TOKEN_ERRORS:
        return _TOKEN_ERRORS[cause.type](cause.message)
    return None
