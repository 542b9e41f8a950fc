"""docs/asyncapi.yaml: generated from the code, up to date, and its schemas accept what the
code produces and refuse what it refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.command.entrypoints.intake_contract import result_event
from services.command.entrypoints.problems import Problem
from services.tools.asyncapi import asyncapi_document, asyncapi_text
from shared.events import EventType, new_event
from shared.payment import PaymentSnapshot, PaymentStatus
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_file_is_up_to_date() -> None:
    assert (ROOT / "docs" / "asyncapi.yaml").read_text() == asyncapi_text(), "run: payments asyncapi"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_reference_resolves_and_every_topic_is_a_channel() -> None:
    doc = yaml.safe_load(asyncapi_text())
    assert doc["asyncapi"] == "3.0.0"
    for ref in _refs(doc):
        assert ref.startswith("#/") and _resolve(doc, ref) is not None, ref
    addresses = {c["address"] for c in doc["channels"].values()}
    defaults = Settings.model_fields
    assert addresses == {defaults[f].default for f in ("events_topic", "dlq_topic", "commands_topic",
                                                        "command_results_topic", "commands_dlq_topic")} | {
        "{endpointUrl}"}  # the webhook deliveries (HTTP), to each endpoint's URL
    assert set(doc["channels"]["webhookDeliveries"]["parameters"]) == {"endpointUrl"}
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}


def _validator(message: str) -> jsonschema.Validator:
    doc = asyncapi_document()
    payload = doc["components"]["messages"][message]["payload"]
    return jsonschema.Draft202012Validator({**json.loads(json.dumps(doc)), **payload})


def _command(**changes: Any) -> dict[str, Any]:
    base = {"specversion": "1.0", "id": "c-1", "source": "/billing", "type": "com.gyroscops.payment.command.create",
            "organizationid": "acme", "subject": "inv-1", "data": {"amount": 1250, "currency": "EUR"}}
    return {**base, **changes}


def test_command_schema_accepts_a_command_and_refuses_what_the_intake_refuses() -> None:
    validator = _validator("paymentCommand")
    validator.validate(_command())
    validator.validate(_command(type="com.gyroscops.payment.command.complete", data={"expected_version": 1}))
    for bad in (_command(type="com.gyroscops.payment.command.teleport"), _command(data={"amount": "12"}),
                _command(type="com.gyroscops.payment.command.complete", data={"amount": 5}),
                {k: v for k, v in _command().items() if k != "organizationid"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_event_and_result_schemas_accept_what_the_code_produces() -> None:
    now = datetime.now(UTC)
    payment = PaymentSnapshot(id="inv-1", organization_id="acme", user_id=None, amount=1250, currency="EUR",
                              status=PaymentStatus.PROCESSING, version=1, created_at=now, updated_at=now)
    _validator("paymentEvent").validate(json.loads(new_event(EventType.CREATED, payment).to_json_bytes()))
    results = _validator("commandResult")
    for outcome in (payment, Problem(title="Payment not found", status=404, detail="no such payment")):
        results.validate(json.loads(result_event("acme", "c-1", "inv-1", outcome, source="/payments/command")
                                    .to_json_bytes()))


def test_the_webhook_message_is_the_body_the_code_sends() -> None:
    from services.webhooks.handlers import webhook_body
    from shared.consistency import ConsistencyTokens
    from shared.events import EventType, new_event
    from tests.support.builders import snapshot

    body = webhook_body(new_event(EventType.CREATED, snapshot("p-1", "acme")), ConsistencyTokens("s" * 32))
    validator = _validator("webhookDelivery")
    validator.validate(json.loads(body))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({k: v for k, v in json.loads(body).items() if k != "consistencytoken"})
