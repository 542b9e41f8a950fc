"""What MongoDB's errors say about a failed batch: transient (the server, the network, a
write conflict: retry the same batch) or not, and if not, whether the store refused the
data (``refused``) or our code failed on it (``error``)."""

from __future__ import annotations

from bson.errors import BSONError
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from services.query.poison import DeadLetterKind

_TRANSIENT_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult", "RetryableWriteError")
# Server codes that say something about the server, not about the event: retried (and,
# if they last, the projector reports itself stalled) rather than dead-lettering every
# event of the batch one after the other.
_SERVER_CODES = frozenset({
    6, 7, 89, 202, 9001,  # host unreachable, host not found, network timeouts, socket error
    24, 112, 251, 262, 50,  # lock timeout, WriteConflict, NoSuchTransaction, time limits
    91, 189, 10107, 11600, 11601, 11602, 13435, 13436,  # shutdown, step-down, not primary, interrupted
    43, 133,  # cursor lost, no server for the read preference
    13, 14031,  # Unauthorized, OutOfDiskSpace: an operator's problem, never an event's
    20, 263,  # transactions not supported by this deployment / this operation
})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same batch may succeed (nothing wrong with its events)."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    if isinstance(exc, PyMongoError) and any(exc.has_error_label(label) for label in _TRANSIENT_LABELS):
        return True
    if isinstance(exc, OperationFailure):
        codes = {exc.code}
        details = exc.details or {}
        codes |= {e.get("code") for e in details.get("writeErrors", ()) if isinstance(e, dict)}
        if (details.get("writeConcernError") or {}).get("code") is not None:
            return True
        return bool(codes & _SERVER_CODES)
    return False


def refusal(exc: BaseException) -> DeadLetterKind:
    """``refused`` for data errors of the driver or server, ``error`` for anything else."""
    if isinstance(exc, PyMongoError | BSONError | OverflowError | UnicodeError):
        return DeadLetterKind.REFUSED
    return DeadLetterKind.ERROR
