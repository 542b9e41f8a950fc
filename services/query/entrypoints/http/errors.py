"""The one mapping from query-side exceptions to RFC 9457 problems (``shared.http``
renders them): invalid parameters, cursors and consistency tokens, unknown payments, and
a read model still behind a read-your-writes wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.query.adapters.cursors import InvalidCursor
from services.query.handlers import NotCaughtUp, PaymentNotFound, VersionNotFound
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken
from shared.http import ProblemError, retry_after

M = TypeVar("M", bound=BaseModel)


def typed(model: type[M], **values: Any) -> M:
    """Build a query model from parameters; its validation errors become a 422 problem."""
    try:
        return model(**values)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])) or "query", "message": e["msg"]} for e in exc.errors()]
        raise ProblemError(422, "Unprocessable Content", "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                           type_="validation-error", errors=errors) from None


@contextmanager
def query_problems() -> Iterator[None]:
    """What a handler raises, as the problem every route answers with."""
    try:
        yield
    except InvalidCursor as exc:
        raise ProblemError(400, "Bad Request", str(exc), type_="invalid-cursor") from None
    except PaymentNotFound as exc:
        raise ProblemError(404, "Not Found", str(exc), type_="payment-not-found") from None
    except VersionNotFound as exc:
        raise ProblemError(404, "Not Found", str(exc), type_="version-not-found",
                           versions={"first": 1, "last": exc.newest}) from None
    except InvalidConsistencyToken as exc:
        raise ProblemError(400, "Bad Request", str(exc), type_="invalid-consistency-token",
                           errors=[{"field": "consistent_with", "message": str(exc)}]) from None
    except ForeignConsistencyToken as exc:
        raise ProblemError(404, "Not Found", str(exc), type_="consistency-token-not-found") from None
    except NotCaughtUp as exc:
        raise ProblemError(409, "Read model behind", str(exc), type_="read-model-behind",
                           headers=retry_after("read-model-behind"), wanted_version=exc.wanted, projected_version=exc.seen,
                           behind=[{"payment_id": p, "wanted_version": w, "projected_version": v}
                                   for p, w, v in exc.behind]) from None
