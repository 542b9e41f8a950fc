"""``WebhookDeliveries`` on the time-skipping test server with a mocked attempt: version
order per payment, backoff with jitter, giving up, duplicates dropped, payments apart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from services.webhooks.messages import AttemptInput, DeliveryRef
from services.webhooks.temporal.activities import WebhookActivities
from services.webhooks.temporal.client import hand_over
from services.webhooks.temporal.workflows import WebhookDeliveries
from tests.support.temporal_env import mocked, time_skipping, worker
from tests.support.workflow_scenarios import ORG, WEBHOOK_JOB, webhook_receiver

RETRY = WEBHOOK_JOB.retry  # base 10 s, cap 60 s, give up after 300 s


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as environment:
        yield environment


def _refs(*versions: int, payment: str = "p") -> list[tuple[str, DeliveryRef]]:
    return [(payment, DeliveryRef(delivery_id=f"{payment}-{v}", payment_version=v)) for v in versions]


async def _deliver(env: WorkflowEnvironment, failures: dict[str, int], items: list[tuple[str, DeliveryRef]],
                   endpoint: str) -> list[AttemptInput]:
    attempt = mocked(WebhookActivities.attempt, webhook_receiver(failures))
    async with worker(env, [WebhookDeliveries], [attempt]) as queue:
        handles = await hand_over(env.client, queue, RETRY, ORG, endpoint, items)
        for handle in handles.values():
            await handle.result()  # its handle skips time (idle: it ends)
    return attempt.calls


async def test_versions_go_out_in_order_each_waiting_for_the_one_before(env: WorkflowEnvironment) -> None:
    calls = await _deliver(env, {"p-1": 2, "p-2": 1}, _refs(1, 2, 3), f"we_{uuid.uuid4().hex[:6]}")
    assert [c.delivery_id for c in calls] == ["p-1", "p-1", "p-1", "p-2", "p-2", "p-3"]
    assert [c.attempt for c in calls] == [1, 2, 3, 1, 2, 1]


async def test_the_backoff_grows_with_jitter_within_its_bounds(env: WorkflowEnvironment) -> None:
    calls = await _deliver(env, {"p-1": 3}, _refs(1), f"we_{uuid.uuid4().hex[:6]}")
    for call in calls:
        ceiling = min(RETRY.cap_seconds, RETRY.base_seconds * 2 ** (call.attempt - 1))
        assert ceiling / 2 <= call.retry_in_seconds <= ceiling
    assert len({c.retry_in_seconds / 2 ** c.attempt for c in calls}) > 1, "no jitter"


async def test_a_delivery_is_given_up_after_the_retry_window_and_the_next_one_goes(env: WorkflowEnvironment) -> None:
    calls = await _deliver(env, {"p-1": -1}, _refs(1, 2), f"we_{uuid.uuid4().hex[:6]}")
    first = [c for c in calls if c.delivery_id == "p-1"]
    assert first[-1].give_up_if_failed and not any(c.give_up_if_failed for c in first[:-1])
    assert sum(c.retry_in_seconds for c in first[:-1]) <= RETRY.max_retry_seconds
    assert [c.delivery_id for c in calls][-1] == "p-2"


async def test_a_repeated_signal_is_delivered_once(env: WorkflowEnvironment) -> None:
    calls = await _deliver(env, {}, _refs(1, 1, 2, 1), f"we_{uuid.uuid4().hex[:6]}")
    assert [c.delivery_id for c in calls] == ["p-1", "p-2"]
    again = DeliveryRef(delivery_id="p-1", payment_version=1, generation=1)  # a redelivery is taken
    calls = await _deliver(env, {}, [("p", again)], f"we_{uuid.uuid4().hex[:6]}")
    assert [c.delivery_id for c in calls] == ["p-1"]


async def test_a_failing_payment_does_not_hold_back_another(env: WorkflowEnvironment) -> None:
    endpoint = f"we_{uuid.uuid4().hex[:6]}"
    attempt = mocked(WebhookActivities.attempt, webhook_receiver({"a-1": -1}))
    async with worker(env, [WebhookDeliveries], [attempt]) as queue:
        handles = await hand_over(env.client, queue, RETRY, ORG, endpoint,
                                  _refs(1, payment="a") + _refs(1, 2, payment="b"))
        with env.auto_time_skipping_disabled():  # b is delivered while a retries in real time
            async with asyncio.timeout(30):
                while len([c for c in attempt.calls if c.delivery_id.startswith("b")]) < 2:
                    await asyncio.sleep(0.1)
        done = [c.delivery_id for c in attempt.calls]
        assert done.count("b-1") == 1 and done.count("b-2") == 1
        assert "a-1" in done
        assert done.count("a-1") == 1, "a's retry is still waiting for its backoff"
        await handles["a"].result()
        await handles["b"].result()
