"""What the projector tells operators: consecutive failures and the stall that
``/readyz`` reports, the outcomes and lag of applied batches, and the bounded labels of
the messages it counts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime

from services.query.domain import Outcome
from services.query.poison import DeadLetterKind
from shared.events import EventType, PaymentEvent
from shared.telemetry import (
    PROJECTION_DEAD_LETTERS,
    PROJECTION_EVENTS,
    PROJECTION_LAG,
    PROJECTOR_CONSECUTIVE_FAILURES,
    PROJECTOR_STALLED,
)

log = logging.getLogger("payments.query.projector")

KNOWN_TYPES = {t.value: t.short for t in EventType}
for _reason in DeadLetterKind:  # every series exists from the start: increase() alerts see the first one
    PROJECTION_DEAD_LETTERS.labels(_reason)


class StallWatch:
    """Consecutive failures of the projector; stalled once they last ``stall_after`` seconds."""

    stall_after = 10.0  # seconds of consecutive failures before /readyz says "stalled"

    def __init__(self) -> None:
        self.failures = 0
        self._failing_since: float | None = None
        self._last_error = ""

    def failed(self, exc: BaseException, attempt: int, first: object | None, *, transient: bool) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self.failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        PROJECTOR_CONSECUTIVE_FAILURES.set(self.failures)
        PROJECTOR_STALLED.set(1 if now - self._failing_since >= self.stall_after else 0)
        where = {"partition": first.partition, "offset": first.offset} if first is not None else {}  # type: ignore[attr-defined]
        log.warning("projection failed, retrying", exc_info=not transient, extra={"fields": {
            "error": self._last_error, "attempt": attempt, "consecutive_failures": self.failures, **where}})

    def progressed(self) -> None:
        if self.failures:
            log.info("projection progressing again", extra={"fields": {"after_failures": self.failures}})
        self.failures, self._failing_since, self._last_error = 0, None, ""
        PROJECTOR_CONSECUTIVE_FAILURES.set(0)
        PROJECTOR_STALLED.set(0)

    async def check(self) -> None:
        """Readiness check: raises while the projector has failed for ``stall_after`` seconds."""
        if self._failing_since is None:
            return
        failing_for = time.monotonic() - self._failing_since
        if failing_for >= self.stall_after:
            PROJECTOR_STALLED.set(1)
            raise RuntimeError(f"projection stalled for {failing_for:.0f}s after {self.failures} consecutive "
                               f"failures; last: {self._last_error}")


def report_batch(events: Sequence[PaymentEvent], outcomes: Sequence[str], newest_event_time: datetime | None) -> None:
    """Count and log an applied batch; ``payments_projection_lag_seconds`` = now minus its
    newest applied event's time."""
    for event, outcome in zip(events, outcomes, strict=True):
        PROJECTION_EVENTS.labels(event.type.short, outcome).inc()
        log.info("event %s", outcome, extra={"fields": {"event_id": event.id, "payment_id": event.subject,
                                                          "version": event.paymentversion}})
    if newest_event_time is not None:
        PROJECTION_LAG.set(max(0.0, time.time() - newest_event_time.timestamp()))
    log.info("projected batch", extra={"fields": {
        "events": len(events), "applied": list(outcomes).count(Outcome.APPLIED),
        "first_event_id": events[0].id, "last_event_id": events[-1].id}})


def _field(raw: bytes | None, name: str) -> object:
    try:
        return json.loads(raw or b"").get(name)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def type_label(raw: bytes | None, event: PaymentEvent | None = None) -> str:
    """Metric label: the short event type, or ``unknown`` (bounded cardinality)."""
    if event is not None:
        return event.type.short
    value = _field(raw, "type")
    return KNOWN_TYPES.get(value, "unknown") if isinstance(value, str) else "unknown"


def event_id_of(raw: bytes | None) -> str | None:
    """The ``id`` of a message that may not be an event (for the log line of its dead letter)."""
    value = _field(raw, "id")
    return value if isinstance(value, str) else None
