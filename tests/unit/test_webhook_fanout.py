"""From events to deliveries (services/webhooks/handlers.py), pure: the organization's
subscribed endpoints only, events from their creation on, the body they get."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.webhooks.handlers import deliveries_for, webhook_body
from services.webhooks.messages import Subscription
from shared.consistency import ConsistencyTokens
from shared.events import EventType, new_event
from shared.payment import PaymentStatus
from tests.support.builders import snapshot

TOKENS = ConsistencyTokens("t" * 32)
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def _event(org: str, type_: EventType = EventType.CREATED, version: int = 1, at: datetime = NOW):  # noqa: ANN202
    status = PaymentStatus.COMPLETED if version > 1 else PaymentStatus.PROCESSING
    return new_event(type_, snapshot("p-1", org, version=version, status=status), time=at,
                     trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})


def test_each_subscribed_endpoint_of_the_events_organization_gets_it_in_order() -> None:
    before = NOW - timedelta(hours=1)
    subs = {"acme": [Subscription("we_all", ["*"], before), Subscription("we_created", ["payment.created"], before)],
            "globex": [Subscription("we_other", ["*"], before)]}
    events = [_event("acme"), _event("acme", EventType.STATUS_CHANGED, 2), _event("initech")]
    found = deliveries_for(events, subs, TOKENS)
    assert [(d.endpoint_id, d.payment_version, d.event_type) for d in found] == [
        ("we_all", 1, "payment.created"), ("we_created", 1, "payment.created"), ("we_all", 2, "payment.status_changed")]


def test_an_endpoint_gets_no_event_from_before_it_existed() -> None:
    subs = {"acme": [Subscription("we_new", ["*"], NOW)]}
    assert deliveries_for([_event("acme", at=NOW - timedelta(seconds=1))], subs, TOKENS) == []
    assert len(deliveries_for([_event("acme", at=NOW)], subs, TOKENS)) == 1


def test_the_body_is_the_cloudevent_with_a_token_and_without_internal_trace_context() -> None:
    event = _event("acme")
    body = json.loads(webhook_body(event, TOKENS))
    assert body["id"] == event.id and body["data"]["payment"]["id"] == "p-1" and body["paymentversion"] == 1
    assert "traceparent" not in body
    assert TOKENS.decode(body["consistencytoken"]).versions == (("p-1", 1),)
