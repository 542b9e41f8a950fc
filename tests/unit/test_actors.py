"""Who caused each event: every door records an actor on its commands (docs/design.md
section 4: the token's ``sub``, a Kafka producer's ``source``, ``system:<what>``)."""

from __future__ import annotations

import pytest

from services.command.commands import BulkCreatePayments, CreatePayment, ModifyPayment, with_actor
from shared.auth import Principal
from shared.events import MAX_ACTOR_LENGTH, PaymentEvent, system_actor
from shared.payment import PaymentAction


def create(actor: str | None = None, command_id: str = "c1") -> CreatePayment:
    return CreatePayment(command_id=command_id, organization_id="org-a", actor=actor, payment_id="p1",
                         amount=100, currency="EUR")


def test_a_token_is_recorded_as_its_subject_or_else_its_organization() -> None:
    assert Principal(org="acme", scopes=frozenset(), subject="user-42").actor == "user-42"
    assert Principal(org="acme", scopes=frozenset()).actor == "org:acme"


def test_system_actors_are_prefixed() -> None:
    assert system_actor("expiry") == "system:expiry"


def test_with_actor_fills_what_names_none_and_keeps_what_does() -> None:
    assert with_actor(create(), "billing").actor == "billing"
    assert with_actor(create("user-1"), "billing").actor == "user-1"
    modify = ModifyPayment(command_id="m1", organization_id="org-a", action=PaymentAction.CANCEL, payment_id="p1")
    assert with_actor(modify, "billing").actor == "billing"
    bulk = BulkCreatePayments(command_id="b1", organization_id="org-a",
                              items=[create(command_id="i1"), create("user-1", command_id="i2")])
    filled = with_actor(bulk, "billing")
    assert isinstance(filled, BulkCreatePayments)
    assert [filled.actor, *(item.actor for item in filled.items)] == ["billing", "billing", "user-1"]


@pytest.mark.parametrize("actor", ["", "a\x00b", "x" * (MAX_ACTOR_LENGTH + 1)])
def test_an_actor_follows_the_text_contract(actor: str) -> None:
    with pytest.raises(ValueError, match="actor"):
        create(actor)


def test_the_event_schema_describes_actor_and_commandid() -> None:
    properties = PaymentEvent.model_json_schema(mode="validation")["properties"]
    assert {"actor", "commandid"} <= set(properties)
    assert "actor" not in PaymentEvent.model_json_schema(mode="validation").get("required", [])
