"""Foreground commands (``payments stack up``, ``payments up``): signals become an exception.

SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread; ``shield()``
ignores further signals while the caller stops what it started, so a second Ctrl-C never
leaves servers behind. The previous handlers come back on exit.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Self

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal arrived (or the caller decided to stop)."""


class ForegroundSignals:
    def __enter__(self) -> Self:
        self._previous = {s: signal.signal(s, self._raise) for s in SIGNALS}
        return self

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    def shield(self) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
