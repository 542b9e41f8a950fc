"""The attempt activity on in-memory fakes (tests/support/webhook_fakes.py): what it signs
and sends, what a failure means, what it does not attempt, the per-organization limit."""

from __future__ import annotations

import asyncio
import time

from services.webhooks.adapters.secret_box import SecretBox
from services.webhooks.domain import ATTEMPT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from services.webhooks.messages import AttemptInput, AttemptOutcome, AttemptView, DeliveryStatus, PostAnswer
from services.webhooks.temporal.activities import WebhookActivities
from tests.support.webhook_fakes import FakeReceiver, FakeRecords

BOX = SecretBox("k" * 32)


def _view(org: str = "acme", *, url: str | None = "https://hooks.example/acme", enabled: bool = True,
          secrets: tuple[str, ...] = ("whsec_new",), status: DeliveryStatus = DeliveryStatus.PENDING) -> AttemptView:
    return AttemptView(org, "we_1", status, "ev-1", "payment.created", b'{"id":"ev-1"}', url, enabled,
                       [BOX.seal(s) for s in secrets])


def _activities(records: FakeRecords, receiver: FakeReceiver, limit: int = 8) -> WebhookActivities:
    return WebhookActivities(records, BOX, receiver, max_in_flight_per_org=limit, disable_after_seconds=60)


def _job(delivery_id: str = "d1", *, give_up: bool = False) -> AttemptInput:
    return AttemptInput(delivery_id=delivery_id, attempt=3, retry_in_seconds=20.0, give_up_if_failed=give_up)


async def test_a_delivery_is_signed_with_every_active_secret_and_names_its_event() -> None:
    records, receiver = FakeRecords({"d1": _view(secrets=("whsec_new", "whsec_old"))}), FakeReceiver()
    result = await _activities(records, receiver).attempt(_job())
    assert result.outcome is AttemptOutcome.SUCCEEDED
    [(url, body, headers)] = receiver.posts
    assert headers[EVENT_ID_HEADER] == "ev-1" and headers[ATTEMPT_HEADER] == "3"
    for secret in ("whsec_new", "whsec_old"):
        assert verify_signature(secret, headers[SIGNATURE_HEADER], body, now=int(time.time()))
    assert records.recorded[0]["ok"] is True and records.recorded[0]["retry_in_seconds"] is None


async def test_a_failure_is_a_retry_until_the_workflow_says_give_up() -> None:
    receiver = FakeReceiver(answer=PostAnswer(False, 500, "HTTP 500"))
    records = FakeRecords({"d1": _view(), "d2": _view()})
    assert (await _activities(records, receiver).attempt(_job("d1"))).outcome is AttemptOutcome.RETRY
    assert records.recorded[-1]["retry_in_seconds"] == 20.0
    assert (await _activities(records, receiver).attempt(_job("d2", give_up=True))).outcome is AttemptOutcome.GIVEN_UP
    assert records.recorded[-1]["retry_in_seconds"] is None


async def test_an_endpoint_disabled_by_this_failure_gets_no_retry() -> None:
    records = FakeRecords({"d1": _view()}, disable_on_failure=True)
    result = await _activities(records, FakeReceiver(answer=PostAnswer(False, None, "timed out"))).attempt(_job())
    assert result.outcome is AttemptOutcome.GIVEN_UP


async def test_nothing_is_sent_for_a_finished_delivery_or_a_gone_or_disabled_endpoint() -> None:
    receiver = FakeReceiver()
    records = FakeRecords({"done": _view(status=DeliveryStatus.SUCCEEDED), "gone": _view(url=None),
                           "off": _view(enabled=False)})
    activities = _activities(records, receiver)
    assert (await activities.attempt(_job("done"))).outcome is AttemptOutcome.DONE_BEFORE
    assert (await activities.attempt(_job("missing"))).outcome is AttemptOutcome.DONE_BEFORE
    assert (await activities.attempt(_job("gone"))).outcome is AttemptOutcome.GIVEN_UP
    assert (await activities.attempt(_job("off"))).outcome is AttemptOutcome.GIVEN_UP
    assert receiver.posts == []
    assert [r["error"] for r in records.recorded] == ["the endpoint was deleted", "the endpoint is disabled"]


async def test_an_organizations_attempts_in_flight_are_limited_and_others_do_not_wait() -> None:
    views = {f"a{i}": _view("busy", url="https://a.example/") for i in range(12)}
    views |= {f"b{i}": _view("calm", url="https://b.example/") for i in range(2)}
    receiver = FakeReceiver(delay=0.05)
    activities = _activities(FakeRecords(views), receiver, limit=3)
    await asyncio.gather(*(activities.attempt(_job(d)) for d in views))
    assert receiver.most_in_flight["https://a.example/"] == 3
    assert receiver.most_in_flight["https://b.example/"] == 2


async def test_a_secret_sealed_under_another_key_gives_the_delivery_up_instead_of_retrying_forever() -> None:
    view = _view()
    foreign = AttemptView(**{**view.__dict__, "sealed_secrets": [SecretBox("z" * 32).seal("whsec_x")]})
    records, receiver = FakeRecords({"d1": foreign}), FakeReceiver()
    result = await _activities(records, receiver).attempt(_job())
    assert result.outcome is AttemptOutcome.GIVEN_UP and "PAYMENTS_WEBHOOKS_SECRET_KEY" in result.error
    assert receiver.posts == []
