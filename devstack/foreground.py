"""Foreground commands (``payments stack up``, ``payments up``): run until a signal, then
stop everything, and report failures as one line.

SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread; while the
command stops what it started, further signals are ignored, so a second Ctrl-C never
leaves servers behind. The previous handlers come back on exit.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Self

import typer

from .endpoints import Endpoints, StackError
from .stack import LocalStack

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


def run_in_foreground(main: Callable[[], int], stop: Callable[[], None],
                      interrupted: Callable[[], int] = lambda: 0) -> None:
    """Run ``main`` until it returns its exit code or a signal arrives (then the code is
    ``interrupted()``'s); then ``stop()``, shielded from further signals, and exit with
    that code."""
    code = 0
    with ForegroundSignals() as signals:
        try:
            code = main()
        except Interrupted:
            code = interrupted()
        finally:
            signals.shield()
            stop()
    typer.echo("stopped", err=True)
    if code:
        raise typer.Exit(code)


def fail(message: str) -> typer.Exit:
    """Print a one-line error; the caller raises the returned Exit (no traceback)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(1)


def start_or_fail(stack: LocalStack) -> Endpoints:
    try:
        return stack.start()
    except StackError as exc:
        raise fail(str(exc)) from None
