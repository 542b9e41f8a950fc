"""Group commit in front of the Temporal start (issue 14): one workflow for many commands.

Today's cost per command is one workflow execution, and the Temporal server's work per
execution is what bounds the creates per second (docs/benchmarks.md). So, per process:

- a command that arrives while fewer than ``max_in_flight`` executions run starts at once,
  alone, with its own deterministic workflow id (no linger: an idle API answers as fast
  as without group commit);
- commands that arrive meanwhile queue; when an execution ends, the queue's head (at most
  ``max_items`` commands and ``max_bytes`` of JSON) runs as ONE ``CommandBatch`` workflow
  with one local activity and one PostgreSQL transaction, a savepoint per item
  (services/command/handlers.py ``run_batch``), in arrival order: two commands on one
  payment keep their order, and optimistic concurrency is unchanged;
- after a batch, the queue is held until it is as big again (or for as long as the batch
  took, at most ``max_hold``): that batch's callers, answered together, come back
  together, and would otherwise queue behind the first of them running alone (measured:
  half the executions, docs/benchmarks.md). A lone command, with no batch before it,
  never waits;
- each caller gets its own outcome. An item the batch refused, or every item of a batch
  that failed as a whole, runs again alone, so that its own workflow records the outcome
  (``GET /v1/commands/{id}`` answers it from there, as without group commit); accepted
  items are answered from their committed result rows, which ``GET /v1/commands/{id}``
  reads once Temporal does not know the id.

Crash safety is the command id claim's: a batch the API did not see finish completes on
any worker of the task queue (or its transaction never committed), and a retried command
(same id) then finds its first result.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.command.commands import Command, CommandBatch, CommandBatchResult, CommandResult, CreatePayment, ModifyPayment

log = logging.getLogger("payments.command.group_commit")

Run = Callable[[Any, float | None], Awaitable[Any]]


class QueuedTooLong(Exception):
    """The caller's wait ended before its queued command's execution did."""


@dataclass(eq=False)
class _Waiting:
    command: CreatePayment | ModifyPayment
    size: int
    future: asyncio.Future[Any]


class GroupCommit:
    """The per-process batcher. ``run(command, wait_timeout)`` executes one command or one
    :class:`CommandBatch` as a workflow and returns its result (PaymentCommandClient)."""

    def __init__(self, run: Run, *, max_items: int = 64, max_bytes: int = 256 * 1024,
                 max_in_flight: int = 1, max_hold: float = 0.05) -> None:
        self.run = run
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._queue: deque[_Waiting] = deque()
        self._queued: dict[tuple[str, str], int] = {}  # (org, command id) -> queued/batched copies
        self._tasks: set[asyncio.Task[None]] = set()
        self.max_hold = max_hold
        self._hold: asyncio.TimerHandle | None = None  # holding the queue after a batch (_finished)
        self._hold_for = 0

    @staticmethod
    def accepts(command: Command) -> bool:
        return isinstance(command, CreatePayment | ModifyPayment)

    def running(self, org: str, command_id: str) -> bool:
        """True while the command waits in this process's queue or runs in one of its batches
        (Temporal knows no workflow by its id then, and PostgreSQL no result yet)."""
        return (org, command_id) in self._queued

    async def submit(self, command: CreatePayment | ModifyPayment, wait_timeout: float | None) -> Any:
        """The command's result (or its Rejected / CommandFailed). Raises QueuedTooLong if
        ``wait_timeout`` passes first: the command still runs."""
        if self._in_flight < self.max_in_flight and not self._queue and self._hold is None:
            self._in_flight += 1
            try:
                return await self.run(command, wait_timeout)
            finally:
                self._finished()
        waiting = _Waiting(command, len(command.model_dump_json()), asyncio.get_running_loop().create_future())
        # Nobody may be left to read a late failure (the caller stopped waiting): no warning for that.
        waiting.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        key = (command.organization_id, command.command_id)
        self._queued[key] = self._queued.get(key, 0) + 1
        self._queue.append(waiting)
        if self._hold is not None and len(self._queue) >= self._hold_for:
            self._release()
        try:
            return await asyncio.wait_for(asyncio.shield(waiting.future), wait_timeout)
        except TimeoutError:
            raise QueuedTooLong(command.command_id) from None

    def _finished(self, batch: int = 1, took: float = 0.0) -> None:
        self._in_flight -= 1
        if batch > 1 and self.max_hold > 0 and self._in_flight == 0 and len(self._queue) < batch:
            # A batch of `batch` callers just got their answers, and under a closed-loop load
            # most send their next command within a moment: start the queue's few commands
            # now and those callers would queue behind them, splitting every round into a
            # small execution and a big one (measured: half the executions, as slow as the
            # batch). So hold the queue until it is as big again, or for as long as the batch
            # took (at most max_hold). Only after a batch: a lone command never waits.
            self._hold_for = batch
            self._hold = asyncio.get_running_loop().call_later(min(took, self.max_hold), self._release)
            return
        self._start()

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        self._start()

    def _start(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._execute(self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting]:
        """The queue's head within the bounds (always at least one command)."""
        group = [self._queue.popleft()]
        size = group[0].size
        while self._queue and len(group) < self.max_items and size + self._queue[0].size <= self.max_bytes:
            size += self._queue[0].size
            group.append(self._queue.popleft())
        return group

    async def _execute(self, group: list[_Waiting]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            alone = group
            if len(group) > 1:
                alone = []
                for waiting, outcome in zip(group, await self._batch(group), strict=True):
                    if isinstance(outcome, CommandResult):
                        self._settle(waiting, outcome)
                    else:  # refused (or the batch failed): its own workflow records the outcome
                        alone.append(waiting)
            await asyncio.gather(*(self._alone(waiting) for waiting in alone))
        finally:
            self._finished(len(group), asyncio.get_running_loop().time() - started)

    async def _batch(self, group: list[_Waiting]) -> list[CommandResult | Any]:
        batch = CommandBatch(batch_id=uuid.uuid4().hex, items=[waiting.command for waiting in group])
        try:
            result: CommandBatchResult = await self.run(batch, None)
        except Exception as err:  # e.g. CommandFailed: the batch as a whole; its items run alone
            log.warning("batch %s of %d commands failed (%s); running them one by one",
                        batch.batch_id, len(group), err)
            return [None] * len(group)
        return list(result.items)

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            outcome = await self.run(waiting.command, None)
        except Exception as err:  # Rejected, CommandFailed, ...: the caller's answer
            self._settle(waiting, err)
        else:
            self._settle(waiting, outcome)

    def _settle(self, waiting: _Waiting, outcome: Any) -> None:
        key = (waiting.command.organization_id, waiting.command.command_id)
        self._queued[key] -= 1
        if not self._queued[key]:
            del self._queued[key]
        if waiting.future.done():
            return
        if isinstance(outcome, BaseException):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)
