"""An in-memory write store for fast tests of the command handlers (cosmicpython's
FakeUnitOfWork): it implements the port the handlers declare
(services/command/ports.py: CommandStore, UnitOfWork), as the PostgreSQL adapter does.

A unit of work works on a copy and commits it only when its block ends normally, as a
transaction does. ``concurrent_updates`` makes the next updates lose a race: another
writer commits first (the stored version moves on) and the update matches nothing.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from services.command.ports import Claim
from shared.events import PaymentEvent
from shared.payment import PaymentSnapshot


@dataclass
class State:
    payments: dict[tuple[str, str], PaymentSnapshot] = field(default_factory=dict)
    commands: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    outbox: list[PaymentEvent] = field(default_factory=list)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.state = copy.deepcopy(store.committed)

    async def claim_command(self, org: str, command_id: str, command_type: str, payment_id: str | None) -> bool:
        if (org, command_id) in self.state.commands:
            return False
        self.state.commands[(org, command_id)] = {"type": command_type, "payment_id": payment_id, "result": None}
        return True

    async def command_result(self, org: str, command_id: str) -> Any:
        return self.state.commands.get((org, command_id), {}).get("result")

    async def save_result(self, org: str, command_id: str, result: Any) -> None:
        self.state.commands[(org, command_id)]["result"] = result

    async def get_payment(self, org: str, payment_id: str, *, for_update: bool = False) -> PaymentSnapshot | None:
        return self.state.payments.get((org, payment_id))  # no lock: update_payment's version check decides

    async def claim_commands(self, claims: Sequence[Claim]) -> set[tuple[str, str]]:
        claimed = set()
        for c in claims:
            key = (c.organization_id, c.command_id)
            if self.state.commands.get(key, {}).get("result", None) is None:
                self.state.commands[key] = {"type": c.command_type, "payment_id": c.payment_id, "result": c.result}
                claimed.add(key)
        return claimed

    async def command_results(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        return {k: r for k in keys if (r := self.state.commands.get(k, {}).get("result")) is not None}

    async def release_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        for key in keys:
            del self.state.commands[key]

    async def insert_payments(self, payments: Sequence[PaymentSnapshot]) -> set[tuple[str, str]]:
        inserted = set()
        for p in payments:
            if (p.organization_id, p.id) not in self.state.payments:
                self.state.payments[(p.organization_id, p.id)] = p
                inserted.add((p.organization_id, p.id))
        return inserted

    async def update_payment(self, p: PaymentSnapshot, expected_version: int) -> bool:
        key = (p.organization_id, p.id)
        if self.store.concurrent_updates > 0:
            self.store.concurrent_updates -= 1
            self._another_writer_commits(key)
        if self.state.payments[key].version != expected_version:
            return False
        self.state.payments[key] = p
        return True

    async def add_events(self, events: Sequence[PaymentEvent]) -> None:
        self.state.outbox.extend(events)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        saved = copy.deepcopy(self.state)
        try:
            yield
        except BaseException:
            self.state = saved  # rolled back to the savepoint
            raise

    def _another_writer_commits(self, key: tuple[str, str]) -> None:
        current = self.store.committed.payments[key]
        moved = current.model_copy(update={"version": current.version + 1})
        self.store.committed.payments[key] = moved
        self.state.payments[key] = moved  # read committed: the next read sees it


class FakeStore:
    def __init__(self) -> None:
        self.committed = State()
        self.concurrent_updates = 0
        self.commits = 0

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeUnitOfWork]:
        uow = FakeUnitOfWork(self)
        yield uow  # an exception (a rejection) leaves `committed` as it was: rolled back
        self.committed = uow.state
        self.commits += 1

    def payment(self, org: str, payment_id: str) -> PaymentSnapshot | None:
        return self.committed.payments.get((org, payment_id))

    def events(self, payment_id: str) -> list[PaymentEvent]:
        return [e for e in self.committed.outbox if e.subject == payment_id]
