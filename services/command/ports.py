"""The command side's ports: what the handlers and the API need from storage, said as
protocols. services/command/adapters/ implements them on PostgreSQL,
tests/support/command_fakes.py in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from shared.events import PaymentEvent
from shared.payment import PaymentSnapshot


class UnitOfWork(Protocol):
    """The statements of one command, inside one transaction (all or nothing)."""

    async def claim_command(self, org: str, command_id: str, command_type: str, payment_id: str | None) -> bool:
        """Reserve the command id; False if it already ran."""

    async def command_result(self, org: str, command_id: str) -> Any:
        """The stored result (JSON) of a command, or None."""

    async def save_result(self, org: str, command_id: str, result: Any) -> None: ...

    async def get_payment(self, org: str, payment_id: str, *, for_update: bool = False) -> PaymentSnapshot | None:
        """``for_update``: lock the payment until the transaction ends (what a refund
        reads must not change before it writes: concurrent refunds queue on it)."""

    async def claim_commands(self, claims: Sequence[Claim]) -> set[tuple[str, str]]:
        """Reserve many command ids at once, each with the result it will have; the
        ``(organization, command id)`` pairs newly claimed (one claimed earlier without a
        result counts as new)."""

    async def command_results(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """The stored results (JSON) of the commands that have one."""

    async def release_claims(self, keys: Sequence[tuple[str, str]]) -> None:
        """Forget claims of this transaction whose command was refused after all."""

    async def insert_payments(self, payments: Sequence[PaymentSnapshot]) -> set[tuple[str, str]]:
        """The ``(organization, id)`` pairs inserted; the other ids were taken."""

    async def update_payment(self, p: PaymentSnapshot, expected_version: int) -> bool:
        """Optimistic concurrency: False if the stored version is no longer ``expected_version``."""

    async def add_events(self, events: Sequence[PaymentEvent]) -> None:
        """Append the events to the outbox, in order (published once the transaction commits)."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: if the block raises, only its statements are undone."""


class Claim(NamedTuple):
    organization_id: str
    command_id: str
    command_type: str
    payment_id: str | None
    result: Any  # JSON


class CommandStore(Protocol):
    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A transaction: committed when the block exits normally, rolled back otherwise."""


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an Idempotency-Key holds: its request's fingerprint and, once answered, the answer."""

    request_hash: str
    status_code: int | None
    body: bytes | None
    headers: dict[str, str]

    @property
    def complete(self) -> bool:
        return self.status_code is not None


class IdempotencyRecords(Protocol):
    """The API's Idempotency-Key records, per organization."""

    async def claim(self, org: str, key: str, request_hash: str) -> IdempotencyRecord | None:
        """None if this request now owns the key; otherwise the existing record."""

    async def save(self, org: str, key: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        """Record the answer of the request that owns the key."""

    async def release(self, org: str, key: str) -> None:
        """Forget an unanswered key (its request failed before any result)."""
