"""From payment events to deliveries, pure: which endpoints of the event's organization
want it, and the body they get (the CloudEvent with a consistency token)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from services.webhooks.domain import subscribed, webhook_event_name
from services.webhooks.messages import NewDelivery, Subscription
from shared.consistency import ConsistencyTokens
from shared.events import PaymentEvent

# Internal trace context stays inside: a receiver gets the event without it.
INTERNAL_ATTRIBUTES = {"traceparent", "tracestate"}
CONSISTENCY_ATTRIBUTE = "consistencytoken"


def webhook_body(event: PaymentEvent, tokens: ConsistencyTokens) -> bytes:
    """The CloudEvent (structured JSON) plus the extension ``consistencytoken``, which a
    receiver passes as ``consistent_with`` to read this version from the query API."""
    body = event.model_dump(mode="json", exclude_none=True, exclude=INTERNAL_ATTRIBUTES)
    body[CONSISTENCY_ATTRIBUTE] = tokens.issue([event.payment])
    return json.dumps(body, separators=(",", ":")).encode()


def deliveries_for(events: Iterable[PaymentEvent], endpoints: Mapping[str, Sequence[Subscription]],
                   tokens: ConsistencyTokens) -> list[NewDelivery]:
    """One delivery per event and subscribed endpoint of its organization, in event order."""
    found = []
    for event in events:
        wanting = [s.endpoint_id for s in endpoints.get(event.organizationid, ())
                   if subscribed(s.events, event.type) and event.time >= s.created_at]
        if not wanting:
            continue
        body = webhook_body(event, tokens)
        for endpoint_id in wanting:
            found.append(NewDelivery(event.organizationid, endpoint_id, event.id, webhook_event_name(event.type),
                                     event.subject, event.paymentversion, body))
    return found
