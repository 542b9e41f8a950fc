"""The query workflows on Temporal's time-skipping test server with mocked activities, through
the query client: one workflow per query, and the failures a caller must tell apart come
back as themselves. Against the real worker and read model:
tests/integration/query/test_query_api.py and test_consistency.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from services.query.handlers import NotCaughtUp
from services.query.queries import HistoryQuery, SearchQuery, StatisticsQuery
from services.query.temporal import registry
from services.query.temporal.activities import QueryActivities
from services.query.temporal.client import PaymentQueryClient
from services.query.temporal.failures import as_application_errors
from shared.consistency import ForeignConsistencyToken, InvalidConsistencyToken
from tests.support.temporal_env import mocked, time_skipping, worker
from tests.support.workflow_scenarios import ORG, PAID, scenarios


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as environment:
        yield environment


def answers(*names: str) -> list:
    return [s.activities[0] for s in scenarios() if s.name in names]


async def test_each_query_has_its_workflow_and_answers_with_its_handlers_result(env: WorkflowEnvironment) -> None:
    activities = answers("SearchPayments.found", "GetPayment.found", "PaymentStatistics.figures")
    async with worker(env, registry.WORKFLOWS, activities) as queue:
        client = PaymentQueryClient(env.client, queue)
        page = await client.search_payments(ORG, SearchQuery())
        payment = await client.get_payment(ORG, "pay-1", ["ct1.a.b"])
        stats = await client.payment_statistics(ORG, StatisticsQuery())
    assert [p.id for p in page.data] == ["pay-1"] and payment is not None and payment.version == PAID.version
    assert stats.count == 1
    search, get, statistics = activities
    assert [len(search.calls), len(get.calls), len(statistics.calls)] == [1, 1, 1]
    assert get.calls[0].consistent_with == ["ct1.a.b"] and get.calls[0].organization_id == ORG


async def test_an_unknown_payment_is_none(env: WorkflowEnvironment) -> None:
    async with worker(env, registry.WORKFLOWS, answers("GetPayment.missing")) as queue:
        assert await PaymentQueryClient(env.client, queue).get_payment(ORG, "nope") is None


async def test_a_read_model_behind_is_not_caught_up_for_the_caller_too(env: WorkflowEnvironment) -> None:
    async with worker(env, registry.WORKFLOWS, answers("SearchPayments.not-caught-up")) as queue:
        with pytest.raises(NotCaughtUp) as behind:
            await PaymentQueryClient(env.client, queue).search_payments(ORG, SearchQuery(), ["ct1.a.b"])
    assert behind.value.behind == [("pay-1", 3, 1)] and behind.value.waited == 5.0


@pytest.mark.parametrize("error", [InvalidConsistencyToken("altered"), ForeignConsistencyToken("not yours")])
async def test_a_token_the_handler_refuses_comes_back_as_itself(env: WorkflowEnvironment, error: Exception) -> None:
    def refuse(_: object) -> None:
        with as_application_errors():
            raise error

    async with worker(env, registry.WORKFLOWS, [mocked(QueryActivities.statistics, refuse)]) as queue:
        with pytest.raises(type(error), match=str(error)):
            await PaymentQueryClient(env.client, queue).payment_statistics(ORG, StatisticsQuery(), ["ct1.a.b"])


async def test_a_payments_history_has_its_workflow_and_an_unknown_payment_is_none(env: WorkflowEnvironment) -> None:
    found = answers("PaymentHistory.found")
    async with worker(env, registry.WORKFLOWS, found) as queue:
        page = await PaymentQueryClient(env.client, queue).payment_history(
            ORG, HistoryQuery(payment_id="pay-1", limit=10), ["ct1.a.b"])
    assert page is not None and [e.version for e in page.data] == [1, 2]
    assert page.data[1].changes == {"status": {"old": "processing", "new": "completed"}}
    call = found[0].calls[0]
    assert (call.query.limit, call.consistent_with) == (10, ["ct1.a.b"])
    async with worker(env, registry.WORKFLOWS, [mocked(QueryActivities.history, lambda _: None)]) as queue:
        assert await PaymentQueryClient(env.client, queue).payment_history(ORG, HistoryQuery(payment_id="x")) is None
