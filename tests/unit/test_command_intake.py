"""The intake's per-poll logic (services/command/entrypoints/intake.py) over the in-memory
store: the command service is the real handlers behind a stand-in for Temporal."""

from __future__ import annotations

import json

from aiokafka import ConsumerRecord

from services.command import handlers
from services.command.commands import BulkCreatePayments, Command, CreatePayment
from services.command.config import CommandSettings
from services.command.entrypoints.intake import CommandIntake
from tests.support.command_fakes import FakeStore


class HandlersOnly:
    """What CommandIntake needs of PaymentCommandClient, running the handlers directly."""

    tokens = None

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.ran: list[str] = []

    async def process(self, command: Command):  # noqa: ANN201
        self.ran.append(command.kind)
        if isinstance(command, BulkCreatePayments):
            return await handlers.bulk_create(self.store, command, source="/test")
        if isinstance(command, CreatePayment):
            return await handlers.create(self.store, command, source="/test")
        return await handlers.modify(self.store, command, source="/test")


def record(offset: int, key: str, command_id: str, currency: str = "EUR") -> ConsumerRecord:
    value = json.dumps({"specversion": "1.0", "id": command_id, "source": "/billing", "organizationid": "org-a",
                        "type": "com.gyroscops.payment.command.create", "subject": key,
                        "data": {"amount": 100, "currency": currency}}).encode()
    return ConsumerRecord("payments.commands", 0, offset, 0, 0, key.encode(), value, None, 0, len(value), [])


async def test_leading_creates_of_a_poll_run_as_one_bulk_and_each_gets_its_result():
    store = FakeStore()
    await handlers.create(store, CreatePayment(command_id="earlier", organization_id="org-a", payment_id="p-4",
                                               amount=1, currency="EUR"), source="/test")
    service = HandlersOnly(store)
    sent: list[tuple[str, dict]] = []

    async def publish(topic: str, key: bytes | None, value: bytes, headers: list) -> None:
        sent.append((topic, json.loads(value)))

    intake = CommandIntake(service, publish, CommandSettings())  # type: ignore[arg-type]
    await intake.handle([record(0, "p-1", "c-1"), record(1, "p-2", "c-2"), record(2, "p-3", "c-3", currency="XXX"),
                         record(3, "p-4", "c-4")])
    by_command = {body["commandid"]: body for _, body in sent}
    # c-3 breaks the contract (never runs); c-4's id is taken: refused in the bulk, then run
    # alone so that its own workflow records the rejection.
    assert service.ran == ["bulk_create", "create"]
    assert by_command["c-1"]["type"].endswith("succeeded") and by_command["c-1"]["data"]["id"] == "p-1"
    assert by_command["c-2"]["data"]["version"] == 1
    assert by_command["c-3"]["type"].endswith("rejected") and by_command["c-3"]["data"]["status"] == 422
    assert by_command["c-4"]["type"].endswith("rejected") and by_command["c-4"]["data"]["status"] == 409
    assert len(sent) == 4
