"""The AsyncAPI 3.0 document of the Kafka contracts (docs/asyncapi.yaml), generated.

Its message schemas come from the same pydantic models as docs/events.schema.json (events)
and as the intake's parser (commands and results), so the document cannot drift from the
code; ``payments asyncapi --check`` (and a test) say when the file is out of date.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.command.entrypoints.bodies import CreatePaymentRequest
from services.command.entrypoints.intake_contract import (
    DATA_MODELS,
    CommandResultEvent,
    PaymentCommandEvent,
    RefundCommandData,
    TransitionCommandData,
    UpdateCommandData,
)
from services.webhooks.domain import ATTEMPT_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER
from services.webhooks.handlers import CONSISTENCY_ATTRIBUTE
from shared.events import CONTENT_TYPE, PaymentEvent
from shared.kafka import KEEP_EVERY_EVENT
from shared.settings import Settings


def _default(name: str) -> str:
    """The contract's topic names are the defaults, whatever this environment sets."""
    return str(Settings.model_fields[name].default)

REF = "#/components/schemas/{model}"
DLQ_HEADERS = {
    "dlq-reason": "Why the record was refused (e.g. `malformed JSON: ...`, `untrusted source`)",
    "dlq-source-topic": "Topic the record was read from",
    "dlq-source-partition": "Its partition",
    "dlq-source-offset": "Its offset",
    "dlq-consumer-group": "Consumer group that refused it",
    "dlq-time": "When it was dead-lettered (RFC 3339)",
}
_MODELS: list[type[BaseModel]] = [PaymentEvent, PaymentCommandEvent, CommandResultEvent, CreatePaymentRequest,
                                  UpdateCommandData, TransitionCommandData, RefundCommandData]


def _schemas() -> dict[str, Any]:
    refs, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=REF)
    schemas = dict(defs["$defs"])
    for model in _MODELS:  # the top-level models under their class names
        ref = refs[(model, "validation")]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        if name != model.__name__:
            schemas[model.__name__] = schemas.pop(name)
    return dict(sorted(schemas.items()))


def _message(name: str, title: str, summary: str, payload: dict[str, Any], key: str,
             headers: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name, "title": title, "summary": summary, "contentType": CONTENT_TYPE, "payload": payload,
        "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": "0.5.0"}},
    }
    if headers is not None:
        message["headers"] = headers
    return message


def _dead_letter(name: str, of: str) -> dict[str, Any]:
    headers = {"type": "object", "properties": {k: {"type": "string", "description": v}
                                                for k, v in DLQ_HEADERS.items()},
               "required": list(DLQ_HEADERS), "additionalProperties": {"type": "string"}}
    return {"name": name, "title": f"Dead-lettered {of}",
            "summary": f"The original {of} record, bytes unchanged (original headers kept), with the reason.",
            "payload": {"description": "The original record's value, unchanged (any bytes)"},
            "headers": headers,
            "bindings": {"kafka": {"key": {"type": "string", "description": "The original record's key"},
                                   "bindingVersion": "0.5.0"}}}


def _webhook(event: dict[str, Any]) -> dict[str, Any]:
    """What `payments webhooks` POSTs to an organization's endpoint (docs/webhooks.md)."""
    headers = {
        EVENT_ID_HEADER: "The CloudEvent id: deduplicate on it (delivery is at least once)",
        EVENT_TYPE_HEADER: "The webhook event name, e.g. payment.created",
        ATTEMPT_HEADER: "1 for the first attempt, then 2, 3, ...",
        SIGNATURE_HEADER: "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" under the endpoint's secret>"
                          " (one v1 per active secret during a rotation)",
    }
    token = {"type": "string", "description": "Pass as `consistent_with` to GET /v1/payments/{id} of the query "
             "API to read this version"}
    return {"name": "webhookDelivery", "title": "Webhook delivery",
            "summary": "A payment event POSTed to an organization's endpoint, signed; per payment in version order.",
            "contentType": CONTENT_TYPE,
            "payload": {"allOf": [event, {"type": "object", "properties": {CONSISTENCY_ATTRIBUTE: token},
                                          "required": [CONSISTENCY_ATTRIBUTE]}]},
            "headers": {"type": "object", "properties": {k: {"type": "string", "description": v}
                                                         for k, v in headers.items()},
                        "required": list(headers)},
            "bindings": {"http": {"method": "POST", "bindingVersion": "0.3.0"}}}


def _keeps_every_event() -> dict[str, Any]:
    """The events topic's retention (shared/kafka.py), as the Kafka channel binding says it."""
    return {"kafka": {"topicConfiguration": {"cleanup.policy": [KEEP_EVERY_EVENT["cleanup.policy"]],
                                             "retention.ms": int(KEEP_EVERY_EVENT["retention.ms"]),
                                             "retention.bytes": int(KEEP_EVERY_EVENT["retention.bytes"])},
                      "bindingVersion": "0.5.0"}}


def asyncapi_document() -> dict[str, Any]:
    ref = {name: {"$ref": REF.format(model=name)} for name in
           ("PaymentEvent", "PaymentCommandEvent", "CommandResultEvent")}
    # `data` depends on `type`, as in the intake's parser (intake_contract.DATA_MODELS).
    command_data = [{"if": {"properties": {"type": {"const": str(kind)}}},
                     "then": {"properties": {"data": {"$ref": REF.format(model=model.__name__)}}}}
                    for kind, model in DATA_MODELS.items()]
    channels = {
        "paymentEvents": (_default("events_topic"), "paymentEvent", _message(
            "paymentEvent", "Payment event", "A payment changed (event-carried state transfer: the full snapshot).",
            ref["PaymentEvent"], "The payment id (per-payment order)")),
        "paymentEventsDeadLetters": (_default("dlq_topic"), "deadLetteredEvent", _dead_letter("deadLetteredEvent", "event")),
        "paymentCommands": (_default("commands_topic"), "paymentCommand", _message(
            "paymentCommand", "Payment command", "A command from a Kafka producer, run once per (organization, id).",
            {"allOf": [ref["PaymentCommandEvent"], *command_data]},
            "The payment id (one payment's commands stay in order)")),
        "paymentCommandResults": (_default("command_results_topic"), "commandResult", _message(
            "commandResult", "Command result", "One per command: succeeded (payment snapshot) or rejected "
            "(RFC 9457 problem).", ref["CommandResultEvent"], "The payment id")),
        "paymentCommandsDeadLetters": (_default("commands_dlq_topic"), "deadLetteredCommand",
                                       _dead_letter("deadLetteredCommand", "command")),
        "webhookDeliveries": ("{endpointUrl}", "webhookDelivery", _webhook(ref["PaymentEvent"])),
    }
    operations = {
        "publishPaymentEvents": ("send", "paymentEvents", "The outbox relay publishes every committed change."),
        "projectPaymentEvents": ("receive", "paymentEvents",
                                 "The projector applies events from trusted sources (PAYMENTS_TRUSTED_EVENT_SOURCES)."),
        "deadLetterEvents": ("send", "paymentEventsDeadLetters", "Invalid or untrusted events, with the reason."),
        "receiveCommands": ("receive", "paymentCommands", "The intake runs each command through the command service."),
        "publishCommandResults": ("send", "paymentCommandResults", "The intake answers each command once it ran."),
        "deadLetterCommands": ("send", "paymentCommandsDeadLetters",
                               "Commands that cannot be answered (not JSON, no id or organization, unknown type)."),
        "deliverWebhooks": ("send", "webhookDeliveries",
                            "`payments webhooks` POSTs each subscribed event to the organization's endpoints "
                            "(over HTTPS, not Kafka)."),
    }
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "payments-cqs Kafka contracts", "version": "1.0.0",
            "description": "Payment events, payment commands from Kafka producers, their results and the "
            "dead-letter topics; and the webhook deliveries made from the events (HTTP POST, "
            "docs/webhooks.md). CloudEvents 1.0, structured mode. Generated by `payments asyncapi` from the "
            "code's pydantic models (docs/producers.md explains them).",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {cid: {"address": address, "messages": {mid: {"$ref": f"#/components/messages/{mid}"}},
                           **({"bindings": _keeps_every_event()} if cid == "paymentEvents" else {})}
                     for cid, (address, mid, _) in channels.items()},
        "operations": {oid: {"action": action, "channel": {"$ref": f"#/channels/{cid}"}, "summary": summary,
                             "messages": [{"$ref": f"#/channels/{cid}/messages/{channels[cid][1]}"}]}
                       for oid, (action, cid, summary) in operations.items()},
        "components": {
            "messages": {mid: message for _, mid, message in channels.values()},
            "schemas": _schemas(),
        },
    }
    document["channels"]["webhookDeliveries"]["parameters"] = {
        "endpointUrl": {"description": "The https URL an organization registered (POST /v1/webhook-endpoints)"}}
    return document


def asyncapi_text() -> str:
    header = "# Generated by `payments asyncapi` from the code's models: do not edit by hand.\n"
    return header + yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
