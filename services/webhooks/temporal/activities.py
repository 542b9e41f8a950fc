"""The attempt activity: load the delivery and its endpoint, sign, POST, record the
outcome. A failed attempt is a result, not an error (the workflow owns the backoff);
only our own outages raise, and Temporal retries those."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from temporalio import activity

from services.webhooks.adapters.secret_box import SecretBox
from services.webhooks.domain import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from services.webhooks.messages import AttemptInput, AttemptOutcome, AttemptResult, DeliveryStatus
from services.webhooks.ports import AttemptRecords, Poster
from services.webhooks.temporal.workflows import ATTEMPT_ACTIVITY
from shared.telemetry import WEBHOOK_ATTEMPT_SECONDS as ATTEMPT_SECONDS
from shared.telemetry import WEBHOOK_DELIVERIES as DELIVERIES
from shared.telemetry import WEBHOOK_ENDPOINTS_DISABLED as ENDPOINTS_DISABLED

log = logging.getLogger("payments.webhooks.delivery")


class WebhookActivities:
    def __init__(self, store: AttemptRecords, box: SecretBox, sender: Poster, *, max_in_flight_per_org: int,
                 disable_after_seconds: float) -> None:
        self.store, self.box, self.sender = store, box, sender
        self.disable_after_seconds = disable_after_seconds
        # Per organization and process: one tenant's slow receivers cannot take every slot.
        self._in_flight: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max_in_flight_per_org))

    @activity.defn(name=ATTEMPT_ACTIVITY)
    async def attempt(self, job: AttemptInput) -> AttemptResult:
        view = await self.store.attempt_view(job.delivery_id)
        if view is None or view.status is not DeliveryStatus.PENDING:
            return AttemptResult(outcome=AttemptOutcome.DONE_BEFORE)
        if view.url is None or not view.enabled:
            why = "the endpoint was deleted" if view.url is None else "the endpoint is disabled"
            await self.store.record_attempt(job.delivery_id, ok=False, status_code=None, error=why,
                                            retry_in_seconds=None, disable_after_seconds=self.disable_after_seconds)
            DELIVERIES.labels("given_up").inc()
            return AttemptResult(outcome=AttemptOutcome.GIVEN_UP, error=why)
        try:
            secrets = [self.box.open(s) for s in view.sealed_secrets]
        except ValueError as exc:  # the key changed: no retry can help; the log says why
            await self.store.record_attempt(job.delivery_id, ok=False, status_code=None, error=str(exc),
                                            retry_in_seconds=None, disable_after_seconds=self.disable_after_seconds)
            DELIVERIES.labels(AttemptOutcome.GIVEN_UP.value).inc()
            return AttemptResult(outcome=AttemptOutcome.GIVEN_UP, error=str(exc))
        async with self._in_flight[view.organization_id]:
            now = int(time.time())
            headers = {
                "Content-Type": "application/cloudevents+json",
                "User-Agent": "payments-webhooks/1",
                EVENT_ID_HEADER: view.event_id,
                EVENT_TYPE_HEADER: view.event_type,
                ATTEMPT_HEADER: str(job.attempt),
                SIGNATURE_HEADER: signature_header(secrets, now, view.payload),
            }
            started = time.perf_counter()
            answer = await self.sender.post(view.url, view.payload, headers)
            ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        retry = None if answer.ok or job.give_up_if_failed else job.retry_in_seconds
        disabled = await self.store.record_attempt(
            job.delivery_id, ok=answer.ok, status_code=answer.status_code, error=answer.error,
            retry_in_seconds=retry, disable_after_seconds=self.disable_after_seconds)
        if disabled:
            ENDPOINTS_DISABLED.inc()
            log.warning("webhook endpoint disabled after failing continuously",
                        extra={"fields": {"endpoint_id": view.endpoint_id, "organization_id": view.organization_id}})
        outcome = (AttemptOutcome.SUCCEEDED if answer.ok else
                   AttemptOutcome.RETRY if retry is not None and not disabled else AttemptOutcome.GIVEN_UP)
        DELIVERIES.labels(outcome.value).inc()
        return AttemptResult(outcome=outcome, status_code=answer.status_code, error=answer.error)
