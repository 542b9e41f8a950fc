"""One run of each workflow type, per way it can end, with mocked activities: what
``python -m tests.support.record_histories`` records into tests/histories/ (replayed by
tests/workflows/test_workflow_replay.py), and what the workflow tests start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.command.commands import (
    BulkCreatePayments,
    BulkCreateResult,
    BulkItemResult,
    CommandBatch,
    CommandBatchResult,
    CommandResult,
    CreatePayment,
    ExpiryOutcome,
    ExpiryTimer,
    ExpiryTimers,
    ModifyPayment,
    Rejected,
    Rejection,
    RejectionKind,
)
from services.command.temporal import registry as commands
from services.command.temporal.activities import CommandActivities
from services.command.temporal.failures import application_error
from services.query.handlers import NotCaughtUp
from services.query.queries import (
    GetInput,
    HistoryInput,
    HistoryQuery,
    PaymentHistory,
    SearchInput,
    SearchQuery,
    SearchResult,
    Statistics,
    StatisticsInput,
    StatisticsQuery,
)
from services.query.temporal import registry as queries
from services.query.temporal.activities import QueryActivities
from services.webhooks.messages import (
    AttemptInput,
    AttemptOutcome,
    AttemptResult,
    DeliveryRef,
    PaymentDeliveries,
    RetryWindow,
)
from services.webhooks.temporal.activities import WebhookActivities
from services.webhooks.temporal.workflows import WebhookDeliveries
from shared.payment import PaymentAction, PaymentStatus, Refund
from shared.payment_view import Payment
from tests.support.builders import snapshot
from tests.support.temporal_env import mocked

ORG = "org-replay"
WHEN = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PAID = snapshot("pay-1", ORG, created_at=WHEN)
COMPLETED = snapshot("pay-1", ORG, status=PaymentStatus.COMPLETED, version=2, created_at=WHEN)
REFUND = ModifyPayment(command_id="refund-pay-1", organization_id=ORG, payment_id="pay-1", actor="user-1",
                       action=PaymentAction.REFUND, amount=300, reason="one item returned")
PARTIALLY_REFUNDED = snapshot("pay-1", ORG, status=PaymentStatus.PARTIALLY_REFUNDED, version=3, created_at=WHEN,
                              amount_refunded=300, refunds=[Refund(id="rf_1", amount=300, reason="one item returned",
                                                                   created_at=WHEN, actor="user-1")])

CREATE = CreatePayment(command_id="create-pay-1", organization_id=ORG, payment_id="pay-1", amount=1000, currency="EUR")
INVALID_CREATE = CREATE.model_copy(update={"currency": "XYZ"})
COMPLETE = ModifyPayment(command_id="complete-pay-1", organization_id=ORG, payment_id="pay-1",
                         action=PaymentAction.COMPLETE)
EMPTY_UPDATE = ModifyPayment(command_id="update-pay-1", organization_id=ORG, payment_id="pay-1",
                             action=PaymentAction.UPDATE)
BULK = BulkCreatePayments(command_id="batch-1", organization_id=ORG, items=[CREATE, CREATE.model_copy(
    update={"command_id": "create-pay-2", "payment_id": "pay-2"})])
HISTORY = PaymentHistory.model_validate(PaymentHistory.model_json_schema()["examples"][0])
BATCH = CommandBatch(batch_id="b1", items=[CREATE, COMPLETE])


WEBHOOK_JOB = PaymentDeliveries(
    organization_id=ORG, endpoint_id="we_1", payment_id="pay-1",
    retry=RetryWindow(base_seconds=10, cap_seconds=60, max_retry_seconds=300, attempt_timeout_seconds=60),
    pending=[DeliveryRef(delivery_id="d-1", payment_version=1), DeliveryRef(delivery_id="d-2", payment_version=2)])


def webhook_receiver(failures: dict[str, int]) -> Any:
    """An attempt answer: each delivery fails its first ``failures[id]`` attempts (-1: always)."""
    def answer(job: AttemptInput) -> AttemptResult:
        left = failures.get(job.delivery_id, 0)
        if left == 0:
            return AttemptResult(outcome=AttemptOutcome.SUCCEEDED, status_code=200)
        failures[job.delivery_id] = left - 1 if left > 0 else left
        return AttemptResult(outcome=AttemptOutcome.GIVEN_UP if job.give_up_if_failed else AttemptOutcome.RETRY,
                             status_code=500, error="HTTP 500")
    return answer


def _refuse(kind: RejectionKind, detail: str, current_version: int | None = None, remaining: int | None = None) -> Any:
    def answer(_: Any) -> Any:
        raise application_error(Rejected(kind, detail, current_version=current_version, remaining=remaining))
    return answer


def _not_caught_up(_: Any) -> Any:
    from services.query.temporal.failures import as_application_errors

    with as_application_errors():
        raise NotCaughtUp([("pay-1", 3, 1)], 5.0)


@dataclass(frozen=True)
class Scenario:
    name: str  # tests/histories/<name>.json
    workflow: type
    input: Any
    activities: list[Any] = field(default_factory=list)
    fails: bool = False


def scenarios() -> list[Scenario]:
    """Fresh mocks each call (they count their calls)."""
    bulk_result = BulkCreateResult(command_id="batch-1", items=[
        BulkItemResult(index=0, payment=PAID),
        BulkItemResult(index=1, rejection=Rejection(kind=RejectionKind.CONFLICT, detail="id taken"))])
    batch_result = CommandBatchResult(batch_id="b1", items=[CommandResult(command_id=CREATE.command_id, payment=PAID),
                                                            CommandResult(command_id=COMPLETE.command_id,
                                                                          payment=COMPLETED)])
    search = SearchInput(organization_id=ORG, query=SearchQuery())
    found = SearchResult(data=[Payment.of(PAID)], total=1, has_more=False, next_cursor=None, limit=20)
    stats_input = StatisticsInput(organization_id=ORG, query=StatisticsQuery())
    stats = Statistics(created_from=None, created_to=None, count=1, by_status={"processing": 1}, currencies=[])
    c, q = commands.BY_COMMAND, {r.kind: r for r in queries.ROUTES}
    # Hours ahead of the test server's clock, which starts at the wall clock's (the timer
    # scenarios come first: a failing scenario's wait can skip that clock by years), each
    # later than the one before (each skips the clock to its deadline).
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=6)
    expiring = PAID.model_copy(update={"expires_at": deadline})
    timers = ExpiryTimers(timers=[ExpiryTimer(organization_id=ORG, payment_id=f"pay-{i}", expires_at=deadline,
                                              version=1) for i in (1, 2)])
    later = ExpiryTimers(timers=[t.model_copy(update={"expires_at": deadline + timedelta(days=1)})
                                 for t in timers.timers])
    expired = expiring.model_copy(update={"status": PaymentStatus.EXPIRED, "version": 2})
    # The first firing is early on the database's clock for pay-2, which expires on the second.
    answers = iter([ExpiryOutcome(expired=[expired], early=later.timers[1:]), ExpiryOutcome(expired=[
        expired.model_copy(update={"id": "pay-2"})])])
    return [
        Scenario("CreatePayment.with-deadline", c[CreatePayment].workflow,
                 CREATE.model_copy(update={"expires_at": deadline}),
                 [mocked(CommandActivities.execute_create, lambda cmd: CommandResult(command_id=cmd.command_id,
                                                                                     payment=expiring)),
                  mocked(CommandActivities.schedule_expiry, lambda _: None)]),
        Scenario("PaymentExpiry.expired", c[ExpiryTimers].workflow, timers,
                 [mocked(CommandActivities.expire, lambda _: ExpiryOutcome(expired=[expired]))]),
        Scenario("PaymentExpiry.early", c[ExpiryTimers].workflow, later,
                 [mocked(CommandActivities.expire, lambda _: next(answers))]),
        Scenario("CreatePayment.created", c[CreatePayment].workflow, CREATE,
                 [mocked(CommandActivities.execute_create, lambda cmd: CommandResult(command_id=cmd.command_id,
                                                                                     payment=PAID))]),
        Scenario("CreatePayment.invalid", c[CreatePayment].workflow, INVALID_CREATE, fails=True),
        Scenario("CreatePayment.id-taken", c[CreatePayment].workflow, CREATE,
                 [mocked(CommandActivities.execute_create, _refuse(RejectionKind.CONFLICT, "id taken"))], fails=True),
        Scenario("ModifyPayment.completed", c[ModifyPayment].workflow, COMPLETE,
                 [mocked(CommandActivities.execute_modify, lambda cmd: CommandResult(command_id=cmd.command_id,
                                                                                     payment=COMPLETED))]),
        Scenario("ModifyPayment.partially-refunded", c[ModifyPayment].workflow, REFUND,
                 [mocked(CommandActivities.execute_modify, lambda cmd: CommandResult(command_id=cmd.command_id,
                                                                                     payment=PARTIALLY_REFUNDED))]),
        Scenario("ModifyPayment.refund-exceeds-remaining", c[ModifyPayment].workflow, REFUND,
                 [mocked(CommandActivities.execute_modify, _refuse(RejectionKind.REFUND_EXCEEDS_REMAINING,
                                                                   "cannot refund 300: only 200 is left", 3, 200))],
                 fails=True),
        Scenario("ModifyPayment.empty-update", c[ModifyPayment].workflow, EMPTY_UPDATE, fails=True),
        Scenario("ModifyPayment.stale", c[ModifyPayment].workflow, COMPLETE,
                 [mocked(CommandActivities.execute_modify, _refuse(RejectionKind.VERSION_MISMATCH, "stale", 4))],
                 fails=True),
        Scenario("BulkCreatePayments.created", c[BulkCreatePayments].workflow, BULK,
                 [mocked(CommandActivities.execute_bulk_create, lambda _: bulk_result)]),
        Scenario("CommandBatch.committed", c[CommandBatch].workflow, BATCH,
                 [mocked(CommandActivities.execute_batch, lambda _: batch_result)]),
        Scenario("SearchPayments.found", q["search"].workflow, search,
                 [mocked(QueryActivities.search, lambda _: found)]),
        Scenario("SearchPayments.not-caught-up", q["search"].workflow,
                 search.model_copy(update={"consistent_with": ["ct1.a.b"]}),
                 [mocked(QueryActivities.search, _not_caught_up)], fails=True),
        Scenario("GetPayment.found", q["get"].workflow, GetInput(organization_id=ORG, payment_id="pay-1"),
                 [mocked(QueryActivities.get, lambda _: Payment.of(PAID))]),
        Scenario("GetPayment.missing", q["get"].workflow, GetInput(organization_id=ORG, payment_id="nope"),
                 [mocked(QueryActivities.get, lambda _: None)]),
        Scenario("WebhookDeliveries.retried-in-order", WebhookDeliveries, WEBHOOK_JOB,
                 [mocked(WebhookActivities.attempt, webhook_receiver({"d-1": 2}))]),
        Scenario("WebhookDeliveries.given-up", WebhookDeliveries, WEBHOOK_JOB,
                 [mocked(WebhookActivities.attempt, webhook_receiver({"d-1": -1}))]),
        Scenario("PaymentStatistics.figures", q["statistics"].workflow, stats_input,
                 [mocked(QueryActivities.statistics, lambda _: stats)]),
        Scenario("PaymentHistory.found", q["history"].workflow,
                 HistoryInput(organization_id=ORG, query=HistoryQuery(payment_id="pay-1")),
                 [mocked(QueryActivities.history, lambda _: HISTORY)]),
    ]
