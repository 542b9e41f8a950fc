"""What an export writes, pure: CSV (a header row, amounts in minor units plus a formatted
column, metadata as JSON) or NDJSON (one payment representation a line), in chunks of
rows, so a stream holds one chunk at a time whatever the number of payments.

CSV cells are made inert against formula injection (OWASP "CSV Injection"): a text cell
that a spreadsheet would read as a formula (first character ``=``, ``+``, ``-``, ``@``,
tab or carriage return) gets a leading single quote. Ids, user ids, descriptions and
metadata are user text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC
from enum import StrEnum
from typing import Any

from shared.money import format_money
from shared.payment_view import Payment


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv", ExportFormat.NDJSON: "application/x-ndjson"}  # UTF-8
COLUMNS = ("id", "created_at", "updated_at", "status", "currency", "amount", "amount_formatted", "user_id",
           "description", "metadata", "version")
CHUNK_ROWS = 200  # rows per chunk written to the stream
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(cell: str) -> str:
    """A text cell a spreadsheet will show as text, never evaluate."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def csv_cells(p: Payment) -> list[Any]:
    return [
        inert(p.id), p.created_at.astimezone(UTC).isoformat(), p.updated_at.astimezone(UTC).isoformat(),
        str(p.status), p.currency, p.amount, format_money(p.amount, p.currency), inert(p.user_id or ""),
        inert(p.description), inert(json.dumps(p.metadata, ensure_ascii=False, separators=(",", ":"))), p.version,
    ]


def ndjson_line(p: Payment) -> str:
    return p.model_dump_json() + "\n"


async def chunks(payments: AsyncIterable[Payment], fmt: ExportFormat) -> AsyncIterator[str]:
    """The export's text, a header first (CSV), then :data:`CHUNK_ROWS` rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if fmt is ExportFormat.CSV:
        writer.writerow(COLUMNS)
        yield _drain(buffer)  # first bytes out before the first page is read
    rows = 0
    async for p in payments:
        if fmt is ExportFormat.CSV:
            writer.writerow(csv_cells(p))
        else:
            buffer.write(ndjson_line(p))
        rows += 1
        if rows % CHUNK_ROWS == 0:
            yield _drain(buffer)
    if buffer.tell():
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
