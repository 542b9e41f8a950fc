"""``PaymentCommandClient``: commands as Temporal workflows, the command half of the seed's
``PaymentCqsService`` (services/facade.py). ``process`` runs a command and waits for its
result, ``process_async`` starts it, ``status`` looks it up; a business rejection comes
back as ``Rejected``. Workflow ids are deterministic (``payments/<org>/<command id>``), so
a retried command attaches to the first run or gets its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from services.command.adapters.store import PaymentStore
from services.command.commands import (
    BulkCreateResult,
    Command,
    CommandBatch,
    CommandResult,
    CommandState,
    CreatePayment,
    Rejected,
    command_type,
)
from services.command.temporal import registry
from services.command.temporal.failures import rejection_of
from services.command.temporal.local_results import LocalResults
from shared.consistency import ConsistencyTokens
from shared.telemetry import COMMAND_DURATION, COMMANDS
from shared.tracing import exemplar, with_trace

_FAILED = {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT,
           WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.CANCELED}


_WAKE = "payments.wake"  # ends a start delay (PaymentCommandClient.wake)


def workflow_id(org: str, command_id: str) -> str:
    return f"payments/{org}/{command_id}"


def _workflow_id_of(command: Command | CommandBatch) -> str:
    if isinstance(command, CommandBatch):  # its items keep their own ids (memo)
        return f"payments-batch/{command.batch_id}"
    return workflow_id(command.organization_id, command.command_id)


class CommandFailed(Exception):
    """The command did not complete for a reason other than a business rule."""


class CommandPending(Exception):
    """The command still runs after the wait timeout (answer 202, poll its status)."""

    def __init__(self, command_id: str) -> None:
        super().__init__(command_id)
        self.command_id = command_id


@contextlib.contextmanager
def measured(command: Command) -> Iterator[None]:
    """``payments_commands_total`` and ``payments_command_duration_seconds`` of one command,
    its outcome told by how the block ends."""
    kind = command_type(command)
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "success"
    except Rejected:
        outcome = "rejected"
        raise
    except CommandPending:
        outcome = "pending"
        raise
    finally:
        COMMANDS.labels(kind, outcome).inc()
        # The exemplar links a slow bucket to this request's trace (OpenMetrics scrapes).
        COMMAND_DURATION.labels(kind).observe(time.perf_counter() - started, exemplar())


class PaymentCommandClient:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        eager_start: bool = False,
        workflow_timeout: timedelta = timedelta(minutes=5),
        store: PaymentStore | None = None,
        local_results: bool = False,
        local_result_wait: float = 0.5,
        tokens: ConsistencyTokens | None = None,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.eager_start = eager_start
        self.workflow_timeout = workflow_timeout
        self.store = store
        # With a worker in this process, results come straight from its activities.
        self.local_results = LocalResults(local_result_wait) if local_results else None
        self.tokens = tokens
        # Command type -> its route (temporal/registry.py); the benchmark swaps in its
        # naive workflow here.
        self.routes: dict[type, registry.Route] = dict(registry.BY_COMMAND)

    async def start(self, command: Command | CommandBatch, delay: float | None = None, *,
                    wake: bool = False) -> WorkflowHandle[Any, Any]:
        """Start the command's workflow, or attach to it; with ``delay``, its first task waits
        that many seconds unless :meth:`wake` comes first."""
        command = with_trace(command)  # its event carries the caller's trace context
        run = self.routes[type(command)].workflow.run
        wid = _workflow_id_of(command)
        memo = None
        if isinstance(command, CommandBatch):  # what the Temporal UI shows the batch ran
            memo = {"commands": [f"{item.organization_id}/{item.command_id}" for item in command.items]}
        try:
            return await self.client.start_workflow(
                run, command, id=wid, task_queue=self.task_queue, memo=memo,
                # A wake never runs an ended command again.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE if wake
                else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=self.workflow_timeout, start_delay=timedelta(seconds=delay) if delay else None,
                start_signal=_WAKE if wake else None,
                request_eager_start=self.eager_start and not delay and not wake,  # then no task to hand over
            )
        except WorkflowAlreadyStartedError:
            # Completed earlier: the retry gets the first result.
            return self.client.get_workflow_handle_for(run, wid)

    async def wake(self, command: Command) -> None:
        """End the start delay of the command's workflow: a signal-with-start does (a plain
        signal does not); the workflows have no handler for it, so it is dropped."""
        await self.start(command, wake=True)

    async def process(
        self, command: Command, *, wait_timeout: float | None = None
    ) -> CommandResult | BulkCreateResult:
        """Run ``command`` and return its result, or raise Rejected / CommandFailed / CommandPending."""
        with measured(command):
            return self.stamped(await self.run(command, wait_timeout))

    async def run(self, command: Command | CommandBatch, wait_timeout: float | None) -> Any:
        """One workflow execution: start it and wait for its outcome (not stamped, not counted)."""
        wid = _workflow_id_of(command)
        with self.local_results.expect(wid) if self.local_results else contextlib.nullcontext() as local:
            handle = await self.start(command)
            return await self._outcome(command, handle, local, wait_timeout)

    async def _outcome(
        self, command: Command | CommandBatch, handle: WorkflowHandle[Any, Any], local: asyncio.Future[Any] | None,
        wait_timeout: float | None,
    ) -> Any:
        if local is not None and self.local_results is not None:
            delivered, result = await self.local_results.first(local)
            if delivered:
                return result
        try:
            return await asyncio.wait_for(handle.result(), wait_timeout)
        except TimeoutError:
            assert not isinstance(command, CommandBatch)  # a batch is awaited without a timeout
            raise CommandPending(command.command_id) from None
        except WorkflowFailureError as err:
            rejection = rejection_of(err)
            if rejection is None:
                what = f"batch {command.batch_id}" if isinstance(command, CommandBatch) else f"command {command.command_id}"
                raise CommandFailed(f"{what} failed: {err.cause or err}") from err
            raise rejection from None

    def stamped(self, result: CommandResult | BulkCreateResult) -> CommandResult | BulkCreateResult:
        """The result with its consistency token (what a read must wait for to see it)."""
        if self.tokens is None:
            return result
        return result.model_copy(update={"consistency_token": self.tokens.issue(result.written())})

    async def process_async(self, command: Command) -> str:
        """Start ``command`` and return its workflow id without waiting."""
        handle = await self.start(command)
        COMMANDS.labels(command_type(command), "accepted").inc()
        return handle.id

    async def status(self, org: str, command_id: str) -> tuple[CommandState, Any] | None:
        """``(state, result | Rejected | CommandFailed)``, or None if no such command."""
        handle = self.client.get_workflow_handle(workflow_id(org, command_id))
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return await self._stored_status(org, command_id)
        if desc.status != WorkflowExecutionStatus.COMPLETED and (stored := await self._stored(org, command_id)):
            return CommandState.COMPLETED, stored  # committed (by a batch, GroupCommit): the row is final
        if desc.status == WorkflowExecutionStatus.RUNNING:
            return CommandState.RUNNING, None
        if desc.status in _FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as err:
                return CommandState.FAILED, rejection_of(err) or CommandFailed(str(err.cause or err))
            return CommandState.FAILED, CommandFailed(f"command ended as {desc.status.name.lower()}")
        route = registry.BY_WORKFLOW_TYPE.get(desc.workflow_type, registry.BY_COMMAND[CreatePayment])
        return CommandState.COMPLETED, self.stamped(route.result.model_validate(await handle.result()))

    async def _stored_status(self, org: str, command_id: str) -> tuple[CommandState, Any] | None:
        """Temporal does not know the id (batched, or past retention): the write store may."""
        if (stored := await self._stored(org, command_id)) is not None:
            return CommandState.COMPLETED, stored
        return None

    async def _stored(self, org: str, command_id: str) -> CommandResult | None:
        stored = await self.store.command_result(org, command_id) if self.store is not None else None
        return None if stored is None else self.stamped(CommandResult.model_validate(stored))
