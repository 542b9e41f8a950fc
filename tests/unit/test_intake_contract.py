"""The Kafka command contract: which messages become commands, rejections or dead letters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.command.commands import CreatePayment, ModifyPayment
from services.command.entrypoints.intake_contract import (
    CommandResultEvent,
    InvalidCommand,
    MalformedCommand,
    ResultType,
    derived_payment_id,
    label_of,
    parse_command,
    result_event,
)
from services.command.entrypoints.problems import Problem
from shared.payment import PaymentAction


def envelope(kind: str = "create", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0", "id": "cmd-1", "source": "/billing", "organizationid": "org-a",
        "type": f"com.gyroscops.payment.command.{kind}",
        "data": {"amount": 1250, "currency": "EUR", "user_id": "u-1"} if kind == "create" else {},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def test_create_builds_the_same_command_as_http() -> None:
    cmd = parse_command(raw(envelope(subject="pay-1", data={"amount": 900, "currency": "JPY", "metadata": {"k": 1}})))
    assert cmd == CreatePayment(command_id="cmd-1", organization_id="org-a", actor="/billing", payment_id="pay-1",
                                amount=900, currency="JPY", metadata={"k": 1})


def test_create_without_subject_derives_the_payment_id_per_organization() -> None:
    first = parse_command(raw(envelope()))
    again = parse_command(raw(envelope()))
    other_org = parse_command(raw(envelope(organizationid="org-b")))
    assert isinstance(first, CreatePayment)
    assert first.payment_id == again.payment_id == derived_payment_id("org-a", "cmd-1")
    assert other_org.payment_id != first.payment_id


@pytest.mark.parametrize("action", ["complete", "fail", "cancel", "refund", "delete"])
def test_transitions_carry_the_optional_expected_version(action: str) -> None:
    cmd = parse_command(raw(envelope(action, subject="pay-1", data={"expected_version": 2})))
    assert cmd == ModifyPayment(command_id="cmd-1", organization_id="org-a", actor="/billing",
                                action=PaymentAction(action), payment_id="pay-1", expected_version=2)
    assert parse_command(raw(envelope(action, subject="pay-1", data=None))).expected_version is None


def test_update_takes_the_patch_fields() -> None:
    cmd = parse_command(raw(envelope("update", subject="pay-1", data={"amount": 7, "description": "x"})))
    assert isinstance(cmd, ModifyPayment)
    assert (cmd.action, cmd.amount, cmd.description, cmd.metadata) == (PaymentAction.UPDATE, 7, "x", None)


@pytest.mark.parametrize(("value", "reason"), [
    (b"{nope", "malformed JSON"),
    (b"", "empty message value"),
    (b"[1]", "JSON object"),
    (raw(envelope(specversion="0.3")), "specversion"),
    (raw(envelope(id="")), "id:"),
    (raw({k: v for k, v in envelope().items() if k != "organizationid"}), "organizationid"),
    (raw(envelope("teleport")), "unknown command type"),
])
def test_unaddressable_messages_are_malformed(value: bytes, reason: str) -> None:
    with pytest.raises(MalformedCommand) as err:
        parse_command(value)
    assert reason in err.value.reason


@pytest.mark.parametrize(("value", "field"), [
    (envelope(data={"amount": -5, "currency": "EUR"}), "amount"),
    (envelope(data={"amount": 5, "currency": "XYZ"}), "currency"),
    (envelope(data={"amount": 5.5, "currency": "EUR"}), "amount"),
    (envelope(data={"amount": 5, "currency": "EUR", "colour": "red"}), "colour"),
    (envelope("update", subject="pay-1", data={}), "at least one"),
    (envelope("complete", data={}), "subject"),
    (envelope("complete", subject="not a valid id!", data={}), "subject"),
    (envelope("complete", subject="pay-1", data={"amount": 5}), "amount"),
    (envelope(subject="pay-1", data={"id": "pay-2", "amount": 5, "currency": "EUR"}), "differs"),
    (envelope(source="/billing\u0000x"), "source"),  # the source becomes the events' actor
    (envelope(source="/" + "s" * 1024), "source"),
])
def test_addressable_commands_outside_the_contract_are_rejected_with_the_field(value: dict, field: str) -> None:
    with pytest.raises(InvalidCommand) as err:
        parse_command(raw(value))
    assert (err.value.command_id, err.value.organization_id) == ("cmd-1", "org-a")
    assert field in err.value.detail
    assert err.value.problem().status == 422


@given(st.binary(max_size=200))
def test_any_bytes_are_a_command_or_a_named_refusal(value: bytes) -> None:
    try:
        parse_command(value)
    except MalformedCommand as exc:
        assert exc.reason
    except InvalidCommand as exc:
        assert exc.detail and exc.command_id


def test_result_ids_are_stable_per_command_and_organization() -> None:
    problem = Problem(title="Payment not found", status=404, detail="no")
    first = result_event("org-a", "cmd-1", "pay-1", problem, source="/payments/command")
    again = result_event("org-a", "cmd-1", "pay-1", problem, source="/payments/command")
    other = result_event("org-b", "cmd-1", "pay-1", problem, source="/payments/command")
    assert first.id == again.id != other.id
    assert first.type is ResultType.REJECTED
    parsed = CommandResultEvent.model_validate_json(first.to_json_bytes())
    assert isinstance(parsed.data, Problem) and parsed.commandid == "cmd-1"


def test_metric_label_is_bounded() -> None:
    assert label_of(raw(envelope("refund"))) == "refund"
    assert label_of(raw(envelope("teleport"))) == "unknown"
    assert label_of(b"\xff") == "unknown"
