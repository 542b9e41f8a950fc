"""One poll of ``payments intake``: each record parsed (entrypoints/intake_contract.py), run
through the command client like an HTTP request, and answered with one result or one dead
letter. One payment's commands run in order, payments concurrently, a poll's leading
creates of an organization as one bulk create. Outages are retried until they pass; a
command whose workflow keeps failing otherwise is dead-lettered: none stalls its partition.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord

from services.command.bootstrap import Commands
from services.command.commands import BulkCreatePayments, BulkCreateResult, Command, CreatePayment, Rejected, command_type
from services.command.config import CommandSettings
from services.command.entrypoints.intake_contract import (
    InvalidCommand,
    MalformedCommand,
    label_of,
    parse_command,
    result_event,
)
from services.command.entrypoints.problems import Problem, problem_of
from services.command.temporal.client import CommandFailed
from shared.dlq import dlq_headers
from shared.events import record_headers
from shared.payment import PaymentSnapshot
from shared.telemetry import INTAKE_MESSAGES, bind_log_context, log_context
from shared.tracing import batch_span, consumer_span, record_carrier, resumed, with_trace

log = logging.getLogger("payments.command.intake")
Publish = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]
# Label values of payments_intake_messages_total{result}.
SUCCEEDED, REJECTED, DEAD_LETTERED = "succeeded", "rejected", "dead_lettered"


class CommandIntake:
    """The per-poll logic, independent of the consumer (``publish`` awaits the broker's ack)."""

    def __init__(self, commands: Commands, publish: Publish, settings: CommandSettings) -> None:
        self.commands = commands
        self.publish = publish
        self.settings = settings
        self.stopping = False
        self._slots = asyncio.Semaphore(settings.intake_concurrency)

    async def handle(self, records: Sequence[ConsumerRecord]) -> None:
        """Handle one poll's records: per key in order, keys concurrently."""
        chains: dict[Any, list[ConsumerRecord]] = defaultdict(list)
        for record in records:
            chains[(record.topic, record.partition, record.key)].append(record)
        if self.settings.intake_batch_creates:
            await self._batch_leading_creates(chains)
        # Every chain finishes (or fails) before the caller decides about the offsets.
        outcomes = await asyncio.gather(*(self._chain(chain) for chain in chains.values() if chain),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _batch_leading_creates(self, chains: dict[Any, list[ConsumerRecord]]) -> None:
        """Run the first command of each payment, when it is a create, together with the
        poll's other such creates of its organization in one BulkCreatePayments workflow
        (each item keeps its command id, its transaction and its result). The succeeded
        ones leave their chain. Rejected items, and every item of a group that failed, are
        left to the one-by-one path, whose workflow records the rejection for
        ``GET /v1/commands/{id}`` (a batch stores only successes)."""
        heads: dict[str, list[tuple[Any, ConsumerRecord, CreatePayment]]] = defaultdict(list)
        for chain_key, chain in chains.items():
            try:
                command = parse_command(chain[0].value, self.settings.expiry_policy())
            except (MalformedCommand, InvalidCommand):
                continue
            if isinstance(command, CreatePayment):  # each keeps its producer's trace context
                command = command.model_copy(update=record_carrier(chain[0].headers, chain[0].value))
                heads[command.organization_id].append((chain_key, chain[0], command))
        size = self.settings.command_max_batch_items
        groups = [g[i:i + size] for g in heads.values() for i in range(0, len(g), size)]
        groups = [g for g in groups if len(g) > 1]
        done = await asyncio.gather(*(self._bulk(group) for group in groups), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                log.warning("batched creates failed, running them one by one: %r", outcome)
                continue
            for chain_key in outcome:
                chains[chain_key].pop(0)

    async def _bulk(self, group: list[tuple[Any, ConsumerRecord, CreatePayment]]) -> list[Any]:
        """Run one batch; answer its succeeded items and return their chain keys."""
        items = [command for _, _, command in group]
        # Deterministic: a redelivered poll attaches to the same workflow.
        digest = hashlib.sha256("\n".join(c.command_id for c in items).encode()).hexdigest()[:32]
        bulk = BulkCreatePayments(command_id=f"intake-batch-{digest}", organization_id=items[0].organization_id,
                                  items=items)
        with batch_span("intake batched creates", [item.trace() for item in items]):
            result = await self.commands.process(bulk)
        assert isinstance(result, BulkCreateResult)
        answered = []
        for (chain_key, record, command), item in zip(group, result.items, strict=True):
            if item.payment is not None:
                with resumed(command.trace()):  # the result continues its command's trace
                    await self._answer(command.organization_id, command.command_id, command.payment_id, item.payment,
                                       "create", record)
                answered.append(chain_key)
        return answered

    async def _chain(self, chain: list[ConsumerRecord]) -> None:
        async with self._slots:
            for record in chain:
                await self.handle_one(record)

    async def handle_one(self, record: ConsumerRecord) -> None:
        """One record, in a span that continues its producer's trace (W3C header, else the
        CloudEvent's ``traceparent``): its command, its result or its dead letter."""
        with consumer_span(f"process {record.topic}", record.headers, record.value,
                           **{"messaging.destination.partition.id": str(record.partition),
                              "messaging.kafka.offset": record.offset}):
            await self._handle_one(record)

    async def _handle_one(self, record: ConsumerRecord) -> None:
        label = label_of(record.value)
        try:
            command = parse_command(record.value, self.settings.expiry_policy())
        except MalformedCommand as exc:
            await self._dead_letter(record, label, exc.reason)
            return
        except InvalidCommand as exc:
            await self._answer(exc.organization_id, exc.command_id, exc.subject, exc.problem(), label, record)
            return
        token = bind_log_context(command_id=command.command_id, organization_id=command.organization_id)
        try:
            outcome = await self._run(command)
            if isinstance(outcome, str):
                await self._dead_letter(record, label, outcome)
            else:
                await self._answer(command.organization_id, command.command_id, command.payment_id, outcome,
                                   label, record)
        finally:
            log_context.reset(token)

    async def _run(self, command: Command) -> PaymentSnapshot | Problem | str:
        """The payment, the rejection's problem, or (a string) why it is dead-lettered."""
        delay = self.settings.intake_retry_backoff_seconds
        failures = 0
        while True:
            try:
                result = await self.commands.process(command)
                assert not isinstance(result, BulkCreateResult)
                return result.payment
            except Rejected as rejection:
                return problem_of(rejection)
            except CommandFailed as exc:
                failures += 1
                if failures >= self.settings.intake_max_attempts:
                    return f"command failed {failures} times: {exc}"
                error: BaseException = exc
            except Exception as exc:  # noqa: BLE001 - Temporal/PostgreSQL outages: retried, never skipped
                error = exc
            if self.stopping:
                raise asyncio.CancelledError
            log.warning("command %s could not run, retrying in %.1fs: %s", command_type(command), delay,
                        repr(error)[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.intake_max_backoff_seconds)

    async def _answer(self, org: str, command_id: str, subject: str | None, outcome: PaymentSnapshot | Problem,
                      label: str, record: ConsumerRecord) -> None:
        event = with_trace(result_event(org, command_id, subject, outcome, source=self.settings.event_source))
        if isinstance(outcome, PaymentSnapshot) and self.commands.tokens is not None:
            # The same read-your-writes token an HTTP caller gets in Consistency-Token.
            event.consistencytoken = self.commands.tokens.issue([outcome])
        key = subject.encode() if subject else record.key
        await self.publish(self.settings.command_results_topic, key, event.to_json_bytes(), record_headers())
        result = SUCCEEDED if isinstance(outcome, PaymentSnapshot) else REJECTED
        INTAKE_MESSAGES.labels(label, result).inc()
        log.info("command %s", result, extra={"fields": {
            "command_id": command_id, "payment_id": subject, "type": label,
            "status": None if isinstance(outcome, PaymentSnapshot) else outcome.status}})

    async def _dead_letter(self, record: ConsumerRecord, label: str, reason: str) -> None:
        headers = dlq_headers(reason, record.topic, record.partition, record.offset, self.settings.intake_group,
                              list(record.headers or []))
        await self.publish(self.settings.commands_dlq_topic, record.key, record.value or b"", headers)
        INTAKE_MESSAGES.labels(label, DEAD_LETTERED).inc()
        log.warning("command sent to the dead-letter topic", extra={"fields": {
            "reason": reason[:500], "partition": record.partition, "offset": record.offset}})
