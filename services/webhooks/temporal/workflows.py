"""``WebhookDeliveries``: one workflow per (endpoint, payment), fed by signal-with-start,
delivering that payment's events one at a time in version order: version N+1 waits until
N succeeded or was given up; other payments have workflows of their own and never wait.

Retries are the workflow's: the attempt activity reports a failed attempt as a result,
and the workflow sleeps (a durable timer) an exponential backoff with jitter drawn from
``workflow.random()`` (deterministic on replay; Temporal's own retry policy has none),
until the retry window is spent. The activity's retry policy covers only our own
outages (database, worker crash)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from services.webhooks.domain import backoff_seconds
    from services.webhooks.messages import (
        AttemptInput,
        AttemptOutcome,
        AttemptResult,
        DeliveryRef,
        PaymentDeliveries,
        RetryWindow,
    )

ATTEMPT_ACTIVITY = "attempt_webhook_delivery"
# With nothing left to deliver, the workflow waits this long for more before it ends.
IDLE = timedelta(minutes=10)
MAX_SEEN = 200  # delivery keys remembered to drop repeated signals (a re-consumed batch)


@workflow.defn(name="WebhookDeliveries")
class WebhookDeliveries:
    def __init__(self) -> None:
        self.pending: list[DeliveryRef] = []
        self.seen: list[str] = []

    @workflow.signal
    def deliver(self, ref: DeliveryRef) -> None:
        if ref.key in self.seen or any(p.key == ref.key for p in self.pending):
            return
        self.pending.append(ref)
        self.pending.sort(key=lambda p: (p.payment_version, p.generation))

    @workflow.query
    def queued(self) -> list[DeliveryRef]:
        return list(self.pending)

    @workflow.run
    async def run(self, job: PaymentDeliveries) -> None:
        self.seen = list(job.seen)
        for ref in job.pending:
            self.deliver(ref)
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self.pending), timeout=IDLE)
            except TimeoutError:
                if not self.pending:
                    return
            ref = self.pending.pop(0)
            self.seen = [*self.seen, ref.key][-MAX_SEEN:]  # a repeat arriving meanwhile is dropped too
            await self._deliver(ref, job.retry)
            if workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished():
                workflow.continue_as_new(job.model_copy(update={"pending": self.pending, "seen": self.seen}))

    async def _deliver(self, ref: DeliveryRef, policy: RetryWindow) -> None:
        started = workflow.now()
        attempt = 1
        while True:
            wait = backoff_seconds(attempt, workflow.random().random(), base=policy.base_seconds,
                                  cap=policy.cap_seconds)
            spent = (workflow.now() - started).total_seconds()
            result: AttemptResult = await workflow.execute_activity(
                ATTEMPT_ACTIVITY,
                AttemptInput(delivery_id=ref.delivery_id, attempt=attempt, retry_in_seconds=wait,
                             give_up_if_failed=spent + wait > policy.max_retry_seconds),
                result_type=AttemptResult,
                start_to_close_timeout=timedelta(seconds=policy.attempt_timeout_seconds),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
            )
            if result.outcome is not AttemptOutcome.RETRY:
                return
            await workflow.sleep(timedelta(seconds=wait))
            attempt += 1
