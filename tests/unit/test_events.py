import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from shared.events import EventType, InvalidEvent, event_json_schema, event_json_schema_text, new_event, parse_event
from shared.payment import PaymentSnapshot, PaymentStatus

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def snapshot(**overrides: object) -> PaymentSnapshot:
    fields: dict[str, object] = dict(
        id="pay_1", organization_id="org_1", user_id="u1", amount=1234, currency="EUR",
        status=PaymentStatus.PROCESSING, description="x", metadata={"k": "v"}, version=1,
        created_at=NOW, updated_at=NOW,
    )
    fields.update(overrides)
    return PaymentSnapshot(**fields)  # type: ignore[arg-type]


def test_schema_file_is_up_to_date() -> None:
    assert (ROOT / "docs" / "events.schema.json").read_text() == event_json_schema_text(), (
        "docs/events.schema.json is stale: run 'payments schema'"
    )


def test_round_trip_and_schema_accepts_what_we_produce() -> None:
    event = new_event(EventType.UPDATED, snapshot(version=2), {"amount": (1000, 1234)})
    raw = event.to_json_bytes()
    assert parse_event(raw) == event
    jsonschema.validate(json.loads(raw), event_json_schema())
    assert json.loads(raw)["paymentversion"] == 2


def good() -> dict:
    return json.loads(new_event(EventType.CREATED, snapshot()).to_json_bytes())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.update(type="com.gyroscops.payment.exploded"), "unknown event type"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e.update(subject="other"), "subject"),
        (lambda e: e.update(paymentversion=2), "paymentversion"),
        (lambda e: e.update(organizationid="org_2"), "organizationid"),
        (lambda e: e["data"]["payment"].update(currency="XXX"), "currency"),
        (lambda e: e["data"]["payment"].update(amount=12.5), "amount"),
        (lambda e: e["data"]["payment"].update(amount=0), "amount"),
        (lambda e: e["data"]["payment"].update(status="lost"), "status"),
        (lambda e: e.update(time="yesterday"), "time"),
    ],
)
def test_invalid_events_say_why(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    payload = good()
    mutate(payload)
    with pytest.raises(InvalidEvent) as err:
        parse_event(json.dumps(payload).encode())
    assert reason in str(err.value)


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1,2]", b"null", None])
def test_non_objects_are_invalid(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(raw)


def test_deleted_event_must_carry_deleted_at() -> None:
    with pytest.raises(ValueError):
        new_event(EventType.DELETED, snapshot(version=2))
    event = new_event(EventType.DELETED, snapshot(version=2, deleted_at=NOW))
    assert parse_event(event.to_json_bytes()).type is EventType.DELETED


def test_extension_attributes_from_other_producers_are_kept() -> None:
    payload = good()
    payload["partnerid"] = "p-42"
    assert parse_event(json.dumps(payload)).model_extra == {"partnerid": "p-42"}


def test_trace_context_is_carried_and_a_malformed_one_is_not_refused() -> None:
    """The distributed-tracing extension is part of the envelope; tracing ignores what it
    cannot read, the projection never refuses an event for it."""
    payload = good()
    payload["traceparent"] = "00-abc-def-01"
    event = parse_event(json.dumps(payload))
    assert (event.traceparent, event.tracestate, event.model_extra) == ("00-abc-def-01", None, {})
    assert "traceparent" not in json.loads(parse_event(json.dumps(good())).to_json_bytes())
