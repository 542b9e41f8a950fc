"""Payment deadlines (issue 24): the form a client sends and the rule every door applies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from shared.payment import AwareDatetime, check_aware


def _rfc3339_text(value: Any) -> Any:
    """A deadline a client sends is RFC 3339 text: pydantic would also take a number of
    seconds since 1970, which is not what anyone means by it."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string with a time zone, e.g. 2026-03-01T10:00:00Z")
    return value


# The deadline a client sends (bodies of both doors): text only, with a time zone.
Deadline = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), Field(
    description="RFC 3339 date-time with a time zone (e.g. `2026-03-01T10:30:00Z`): the payment becomes "
    "`expired` if still `processing` then. In the future and at most PAYMENTS_PAYMENT_MAX_TTL_SECONDS "
    "(30 days by default) ahead")]


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """How far ahead a deadline may be, and the one a payment created without gets (the
    PAYMENTS_PAYMENT_*_TTL_SECONDS settings). The rule of every door, HTTP, bulk and intake."""

    max_ttl: timedelta
    default_ttl: timedelta | None = None

    def check(self, expires_at: datetime, now: datetime) -> datetime:
        """``expires_at`` if a client may ask for it ``now``; else ValueError saying why."""
        check_aware(expires_at)
        if expires_at <= now:
            raise ValueError(f"must be in the future (it is now {now.isoformat()})")
        if expires_at - now > self.max_ttl:
            raise ValueError(f"must be at most {int(self.max_ttl.total_seconds())} seconds ahead "
                             "(PAYMENTS_PAYMENT_MAX_TTL_SECONDS)")
        return expires_at

    def for_create(self, expires_at: datetime | None, now: datetime) -> datetime | None:
        """The deadline of a payment created ``now``: the one asked for, checked, or the default."""
        if expires_at is not None:
            return self.check(expires_at, now)
        return now + self.default_ttl if self.default_ttl is not None else None
