"""Partial refunds at the command side's edges, without servers: the Kafka refund
command's data, the refusal that names what is left across Temporal and as a problem."""

from __future__ import annotations

import json

import pytest

from services.command.commands import ModifyPayment, Rejected, Rejection, RejectionKind
from services.command.entrypoints.intake_contract import InvalidCommand, parse_command
from services.command.entrypoints.problems import problem_of
from services.command.temporal.failures import application_error, rejection_of
from shared.payment import PaymentAction


def envelope(kind: str, subject: str, data: dict) -> dict:
    return {"specversion": "1.0", "id": "cmd-1", "source": "/billing", "organizationid": "org-a",
            "type": f"com.gyroscops.payment.command.{kind}", "subject": subject, "data": data}


def raw(value: dict) -> bytes:
    return json.dumps(value).encode()


def test_a_kafka_refund_takes_an_amount_and_a_reason() -> None:
    cmd = parse_command(raw(envelope("refund", subject="pay-1", data={"amount": 250, "reason": "returned"})))
    assert cmd == ModifyPayment(command_id="cmd-1", organization_id="org-a", actor="/billing", payment_id="pay-1",
                                action=PaymentAction.REFUND, amount=250, reason="returned")


def test_a_kafka_refund_without_an_amount_refunds_what_is_left() -> None:
    cmd = parse_command(raw(envelope("refund", subject="pay-1", data={})))
    assert isinstance(cmd, ModifyPayment) and cmd.amount is None and cmd.reason is None


@pytest.mark.parametrize("amount", [0, -1, 2.5, "10", True])
def test_a_kafka_refund_of_a_bad_amount_is_invalid_naming_it(amount: object) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(raw(envelope("refund", subject="pay-1", data={"amount": amount})))
    assert "amount" in caught.value.detail and caught.value.problem().status == 422


def test_what_is_left_survives_temporal_and_becomes_the_problem() -> None:
    rejected = Rejected(RejectionKind.REFUND_EXCEEDS_REMAINING, "only 300 is left (remaining: 300)",
                        current_version=4, remaining=300)
    back = rejection_of(application_error(rejected))
    assert back is not None and (back.kind, back.remaining, back.current_version) == (rejected.kind, 300, 4)
    assert Rejection.of(back).error().remaining == 300
    problem = problem_of(back)
    assert (problem.status, problem.remaining) == (409, 300)
    assert problem.type.endswith("/refund-exceeds-remaining") and "remaining: 300" in problem.detail
