"""What a delivery attempt needs from the outside (services/webhooks/temporal/activities.py):
the PostgreSQL store and the HTTP sender implement these; tests/support/webhook_fakes.py
fakes them."""

from __future__ import annotations

from typing import Protocol

from services.webhooks.messages import AttemptView, PostAnswer


class AttemptRecords(Protocol):
    async def attempt_view(self, delivery_id: str) -> AttemptView | None: ...

    async def record_attempt(self, delivery_id: str, *, ok: bool, status_code: int | None, error: str | None,
                             retry_in_seconds: float | None, disable_after_seconds: float) -> bool: ...


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostAnswer: ...
