"""What PaymentCommandClient does for GroupCommit (services/command/temporal/group_commit.py),
in process and on the in-memory store (tests/support/command_fakes.py): ``start`` keeps one
"workflow" per id as Temporal does with USE_EXISTING and ALLOW_DUPLICATE_FAILED_ONLY (a
running or completed one is attached to, a failed one runs again; a delayed one starts
when woken or when its delay ends), ``run`` starts and waits. Executions wait for gates
the test opens, so that the test decides what is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.command import handlers
from services.command.commands import CommandBatch, CreatePayment
from services.command.temporal.client import workflow_id
from tests.support.command_fakes import FakeStore

BATCHES = "batch"  # the key of `Engine.held` that holds every batch


def key_of(command: Any) -> str:
    return BATCHES if isinstance(command, CommandBatch) else command.command_id


class Engine:
    def __init__(self, delay: float = 0.0, clock: Any = handlers.utc_now) -> None:
        self.store = FakeStore()
        self.clock = clock
        self.calls: list[Any] = []  # every execution, in the order they started
        self.gate = asyncio.Event()  # every execution waits for it
        self.held: dict[str, asyncio.Event] = {}  # command id (or BATCHES) -> a gate of its own
        self.delay = delay  # how long each execution takes
        self.unreachable = False  # start() fails, as with the Temporal server down
        self.slow_starts: dict[str, asyncio.Event] = {}  # command id -> its start() waits for it
        self.workflows: dict[str, asyncio.Task[Any]] = {}
        self.delayed: dict[str, asyncio.Event] = {}  # workflow id -> set when woken

    @staticmethod
    def workflow_id(command: Any) -> str:
        if isinstance(command, CommandBatch):
            return f"payments-batch/{command.batch_id}"
        return workflow_id(command.organization_id, command.command_id)

    async def start(self, command: Any, delay: float | None = None) -> asyncio.Task[Any]:
        if key_of(command) in self.slow_starts:
            await self.slow_starts[key_of(command)].wait()
        if self.unreachable:
            raise ConnectionError("the Temporal server is unreachable")
        wid = self.workflow_id(command)
        task = self.workflows.get(wid)
        if task is None or (task.done() and task.exception() is not None):
            self.calls.append(command)
            task = self.workflows[wid] = asyncio.get_running_loop().create_task(self._execute(command, delay))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # read or not: no warning
        return task

    async def run(self, command: Any, wait_timeout: float | None) -> Any:
        return await asyncio.shield(await self.start(command))

    async def wake(self, command: Any) -> None:
        if self.unreachable:
            raise ConnectionError("the Temporal server is unreachable")
        self.delayed.setdefault(self.workflow_id(command), asyncio.Event()).set()

    def waiting_out_its_delay(self, command: Any) -> bool:
        woken = self.delayed.get(self.workflow_id(command))
        return woken is not None and not woken.is_set()

    async def outcome(self, command: Any) -> Any:
        """The result of the command's own workflow (raises its Rejected)."""
        return await asyncio.shield(self.workflows[self.workflow_id(command)])

    def executions(self, command_id: str) -> int:
        """How many executions ran the command on its own (batches not counted)."""
        return sum(1 for c in self.calls if not isinstance(c, CommandBatch) and c.command_id == command_id)

    async def _execute(self, command: Any, delay: float | None) -> Any:
        if delay:
            woken = self.delayed.setdefault(self.workflow_id(command), asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), delay)
        await self.gate.wait()
        if key_of(command) in self.held:
            await self.held[key_of(command)].wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(command, CommandBatch):
            return await handlers.run_batch(self.store, command, source="/t", clock=self.clock)
        if isinstance(command, CreatePayment):
            return await handlers.create(self.store, command, source="/t", clock=self.clock)
        return await handlers.modify(self.store, command, source="/t", clock=self.clock)
