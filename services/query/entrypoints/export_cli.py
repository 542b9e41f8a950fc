"""``payments export``: what ``GET /v1/payments/export`` streams, written to a file or
stdout by an operator (straight from the read model, as ``payments reconcile`` reads it),
with a progress bar of the rows so far on stderr. Same handler, so the same order, CSV
safety, resumption and one export at a time per organization."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import IO, Any

import typer
from pydantic import ValidationError

from services.query.bootstrap import query_runtime
from services.query.export_format import ExportFormat, chunks
from services.query.handlers import UnknownStartingPayment
from services.query.ports import ExportBusy
from services.query.queries import ExportQuery
from shared.settings import Settings, get_settings


class _Rows:
    """A rich progress bar of the rows written so far (their total is not known), on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.count, self.started, self.bar = 0, time.monotonic(), None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]export"), BarColumn(), TextColumn("{task.completed:,} rows"),
                                TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(),
                                console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task("export", total=None, rate="-")

    async def counted(self, payments: Any) -> Any:
        async for p in payments:
            self.count += 1
            if self.bar is not None and self.count % 500 == 0:
                self.bar.update(self.task, completed=self.count, rate=f"{self.count / self._elapsed():,.0f}")
            yield p

    def _elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.count, rate=f"{self.count / self._elapsed():,.0f}")
            self.bar.stop()


async def run_export(settings: Settings, org: str, query: ExportQuery, out: IO[str], progress: bool = True) -> int:
    """Write the export to ``out``; the number of payments written."""
    async with query_runtime(settings) as runtime:
        payments = await runtime.handlers.export(org, query)
        rows = _Rows(progress)
        try:
            stream: Any = rows.counted(payments)
            async for chunk in chunks(stream, query.format):
                out.write(chunk)
        finally:
            rows.stop()
            await payments.aclose()
        return rows.count


def export(
    org: str = typer.Option(..., "--org", help="The organization whose payments to export."),
    fmt: ExportFormat = typer.Option(ExportFormat.CSV, "--format", help="csv or ndjson."),
    query: str = typer.Option(None, "--query", help="The search query language, e.g. \"metadata['order']:'6735'\"."),
    starting_after: str = typer.Option(None, "--starting-after", help="Resume after this payment id."),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="File to write ('-': stdout)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the rows so far on stderr."),
) -> None:
    """Export an organization's payments (all, or those --query matches) in created order, as
    GET /v1/payments/export does."""
    try:
        q = ExportQuery(format=fmt, query=query, starting_after=starting_after)
    except ValidationError as exc:
        typer.secho("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), fg="red", err=True)
        raise typer.Exit(2) from None
    settings = get_settings()
    try:
        if str(output) == "-":
            count = asyncio.run(run_export(settings, org, q, sys.stdout, progress))
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = asyncio.run(run_export(settings, org, q, out, progress))
    except (UnknownStartingPayment, ExportBusy) as exc:
        message = str(exc) if isinstance(exc, UnknownStartingPayment) else "another export of this organization is running"
        typer.secho(message, fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"exported {count} payments", err=True)
