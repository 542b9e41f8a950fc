"""``LocalResults``: with a worker in this process, an activity hands its committed outcome
straight to the request waiting for that workflow (a measured latency shortcut next to
the workflow history, which stays the fallback and the record: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class LocalResults:
    """The in-process hand-over: an activity of this process's worker delivers its outcome
    (the result once its transaction committed, or the :class:`Rejected`) to the request
    waiting for that workflow. The committed result is final (a retried workflow task
    returns the same stored result), so the request may answer with it at once."""

    def __init__(self, wait: float = 0.5) -> None:
        self.wait = wait  # then the request reads the history after all
        self._waiting: dict[str, list[asyncio.Future[Any]]] = {}

    @contextlib.contextmanager
    def expect(self, wid: str) -> Iterator[asyncio.Future[Any]]:
        """A future the outcome of workflow ``wid`` is delivered to while the block runs."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wid, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiting.get(wid, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(wid, None)
            if not future.done():
                future.cancel()

    async def first(self, future: asyncio.Future[Any]) -> tuple[bool, Any]:
        """``(True, result)`` if delivered within :attr:`wait` (a Rejected is raised), else ``(False, None)``."""
        try:
            return True, await asyncio.wait_for(asyncio.shield(future), self.wait)
        except TimeoutError:
            return False, None

    def deliver(self, wid: str, outcome: Any) -> None:
        """Called by an activity of this process after its transaction committed
        (``outcome`` is the result) or was refused (a :class:`Rejected`)."""
        for future in self._waiting.get(wid, []):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
