"""Group commit: while an execution of this process is in flight, the creates and
modifications that arrive meanwhile run together as one ``CommandBatch`` workflow and one
transaction, each keeping its own outcome. Composed around the process's
:class:`PaymentCommandClient` by the bootstrap; how and why it batches, holds the queue
and keeps a 202 durable: docs/command-service.md, "Group commit".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from services.command.commands import (
    BulkCreateResult,
    Command,
    CommandBatch,
    CommandBatchResult,
    CommandResult,
    CommandState,
    CreatePayment,
    ModifyPayment,
)
from services.command.temporal.client import CommandPending, PaymentCommandClient, measured
from shared.consistency import ConsistencyTokens
from shared.tracing import batch_span, resumed, with_trace

log = logging.getLogger("payments.command.group_commit")

_STARTING, _STARTED = "starting", "started"


class QueuedTooLong(Exception):
    """The caller's wait ended before its queued command's execution did."""


@dataclass(eq=False)
class _Waiting:
    command: CreatePayment | ModifyPayment
    size: int
    future: asyncio.Future[Any]
    in_batch: bool = False  # taken into a batch that has not decided yet
    own: str | None = None  # its caller left: its own workflow is _STARTING or _STARTED, and records the outcome


class GroupCommit:
    """The per-process batcher around ``client``: the same ``process``, ``process_async``
    and ``status`` as the client. It runs executions with ``client.run`` (one command or
    one :class:`CommandBatch`), starts a command's own workflow with ``client.start``
    (its first task after ``delay`` unless ``client.wake`` comes first)."""

    def __init__(self, client: PaymentCommandClient, *, max_items: int = 64, max_bytes: int = 256 * 1024,
                 max_in_flight: int = 1, max_hold: float = 0.05, own_delay: float = 90.0) -> None:
        self.client = client
        # Longer than an orphaned batch takes to finish elsewhere: its workflow task times
        # out (10 s), then its activity has up to 60 s (schedule-to-close, temporal/workflows.py).
        self.own_delay = own_delay
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

    @property
    def tokens(self) -> ConsistencyTokens | None:
        return self.client.tokens

    @staticmethod
    def accepts(command: Command) -> bool:
        return isinstance(command, CreatePayment | ModifyPayment)

    async def process(self, command: Command, *, wait_timeout: float | None = None) -> CommandResult | BulkCreateResult:
        """As ``PaymentCommandClient.process``; a create or modification may join a batch."""
        if not self.accepts(command):
            return await self.client.process(command, wait_timeout=wait_timeout)
        with measured(command):
            try:
                raw = await self.submit(command, wait_timeout)  # type: ignore[arg-type]
            except QueuedTooLong:
                raise CommandPending(command.command_id) from None
            return self.client.stamped(raw)

    async def process_async(self, command: Command) -> str:
        return await self.client.process_async(command)

    async def status(self, org: str, command_id: str) -> tuple[CommandState, Any] | None:
        """As ``PaymentCommandClient.status``; a command queued or batched here, whose caller
        still waits, is running (Temporal may know no workflow by its id yet)."""
        found = await self.client.status(org, command_id)
        if found is None and self.running(org, command_id):
            return CommandState.RUNNING, None
        return found

    def running(self, org: str, command_id: str) -> bool:
        """True while the command waits in this process's queue or runs in one of its batches
        and its caller still waits (Temporal may know no workflow by its id then, and
        PostgreSQL no result yet)."""
        return (org, command_id) in self._queued

    async def submit(self, command: CreatePayment | ModifyPayment, wait_timeout: float | None) -> Any:
        """The command's result (or its Rejected / CommandFailed). Raises QueuedTooLong if
        ``wait_timeout`` passes first, once the command is durable (:meth:`_own`)."""
        command = with_trace(command)  # batched or not, its event carries its caller's context
        if self._in_flight < self.max_in_flight and not self._queue and self._hold is None:
            self._in_flight += 1
            try:
                return await self.client.run(command, wait_timeout)
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
            if waiting.future.done():  # settled since the timeout fired
                return waiting.future.result()
        await self._own(waiting)
        raise QueuedTooLong(command.command_id)

    async def _own(self, waiting: _Waiting) -> None:
        """Before its caller is told 202: the command's own workflow (module docstring). A
        start error propagates (the caller retries) and leaves the command where it was."""
        if waiting in self._queue:  # not taken: its own workflow runs it instead
            self._queue.remove(waiting)  # first: taken into a batch during the start, it would run twice at once
            try:
                await self.client.start(waiting.command, None)
            except BaseException:
                self._queue.appendleft(waiting)  # the oldest: its wait ended first
                if self._hold is None:
                    self._start()
                raise
            self._forget(waiting)
            waiting.future.cancel()
            return
        delayed = waiting.in_batch  # else it runs alone, under that same id already
        waiting.own = _STARTING
        try:
            await self.client.start(waiting.command, self.own_delay if delayed else None)
        except BaseException:
            waiting.own = None
            raise
        waiting.own = _STARTED
        if delayed and not waiting.in_batch:  # the batch decided during the start
            self._wake(waiting)

    def _finished(self, batch: int = 1, took: float = 0.0) -> None:
        self._in_flight -= 1
        if batch > 1 and self.max_hold > 0 and self._in_flight == 0 and len(self._queue) < batch:
            # A batch of `batch` callers just got their answers, and under a closed-loop load
            # most send their next command within a moment: started now, the queue's few
            # commands would split every round into a small execution and a big one
            # (docs/command-service.md, "Group commit"). So hold the queue until it is as
            # big again, or for as long as the batch took (at most max_hold). Only after a
            # batch: a lone command never waits.
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
        for waiting in group:
            waiting.in_batch = len(group) > 1
        return group

    async def _execute(self, group: list[_Waiting]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            alone = group
            if len(group) > 1:
                alone = []
                for waiting, outcome in zip(group, await self._batch(group), strict=True):
                    waiting.in_batch = False
                    if waiting.own == _STARTED:
                        self._wake(waiting)
                    if isinstance(outcome, CommandResult) or waiting.own:
                        self._settle(waiting, outcome)
                    else:  # refused (or the batch failed): its own workflow records the outcome
                        alone.append(waiting)
            await asyncio.gather(*(self._alone(waiting) for waiting in alone))
        finally:
            self._finished(len(group), asyncio.get_running_loop().time() - started)

    async def _batch(self, group: list[_Waiting]) -> list[CommandResult | Any]:
        batch = CommandBatch(batch_id=uuid.uuid4().hex, items=[waiting.command for waiting in group])
        try:  # a trace of its own, linked to each command's: no command is its one parent
            with batch_span("group commit", [item.trace() for item in batch.items], **{"payments.batch_id": batch.batch_id}):
                result: CommandBatchResult = await self.client.run(batch, None)
        except Exception as err:  # e.g. CommandFailed: the batch as a whole; its items run alone
            log.warning("batch %s of %d commands failed (%s); running them one by one",
                        batch.batch_id, len(group), err)
            return [None] * len(group)
        return list(result.items)

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            with resumed(waiting.command.trace()):  # its caller's trace, not the batch's
                outcome = await self.client.run(waiting.command, None)
        except Exception as err:  # Rejected, CommandFailed, ...: the caller's answer
            self._settle(waiting, err)
        else:
            self._settle(waiting, outcome)

    def _settle(self, waiting: _Waiting, outcome: Any) -> None:
        self._forget(waiting)
        if waiting.future.done():
            return
        if isinstance(outcome, BaseException):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)

    def _wake(self, waiting: _Waiting) -> None:
        """Let a 202'd batched command's delayed own workflow run now (the batch decided)."""
        async def wake() -> None:
            try:
                with resumed(waiting.command.trace()):
                    await self.client.wake(waiting.command)
            except Exception as err:  # it runs when its delay ends instead
                log.warning("could not wake the workflow of command %s (%s)", waiting.command.command_id, err)

        task = asyncio.get_running_loop().create_task(wake())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, waiting: _Waiting) -> None:
        key = (waiting.command.organization_id, waiting.command.command_id)
        self._queued[key] -= 1
        if not self._queued[key]:
            del self._queued[key]
