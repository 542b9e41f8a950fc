"""``GET /v1/payments/export``: every payment a query matches, streamed as CSV or NDJSON
(services/query/export_format.py), one export at a time per organization. Registered
before the routes of :mod:`routes`, whose ``/v1/payments/{payment_id}`` would take it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from services.query.entrypoints.http.errors import query_problems, typed
from services.query.entrypoints.http.routes import Handlers, Reader
from services.query.entrypoints.http.schemas import COMMON_ERRORS, CONSISTENCY_ERRORS, PROBLEM, ConsistentWith, SearchText
from services.query.export_format import COLUMNS, MEDIA_TYPES, ExportFormat, chunks
from services.query.queries import ExportQuery
from shared.payment import PAYMENT_ID_PATTERN

router = APIRouter(prefix="/v1")

_STREAM = {"schema": {"type": "string"}}
DESCRIPTION = (
    "Every payment of the organization that `query` matches (all of them without), in created order with "
    "ties by id, streamed with constant memory: the first bytes leave before the read model's last batch is "
    "read. CSV columns: " + ", ".join(f"`{c}`" for c in COLUMNS) + "; `amount` in minor units, "
    "`amount_formatted` in major units with the currency, `metadata` as JSON; a text cell that a spreadsheet "
    "would take for a formula (first character `=`, `+`, `-`, `@`, tab or CR) starts with a `'`. NDJSON: one "
    "payment (as `GET /v1/payments/{id}` answers it) a line. Resume a broken export with `starting_after` = "
    "the last id received. One export at a time per organization (429 `export-running` with `Retry-After` "
    "otherwise); the slot is freed when the stream ends or the client goes away. A payment whose id is "
    "`export` is found by search (`query=id:export`), not by this path.")


@router.get(
    "/payments/export", tags=["payments"], summary="Export payments", response_class=StreamingResponse,
    description=DESCRIPTION,
    responses={
        200: {"description": "Every matching payment in created order (ties by id), streamed",
              "content": {MEDIA_TYPES[ExportFormat.CSV]: _STREAM, MEDIA_TYPES[ExportFormat.NDJSON]: _STREAM}},
        **COMMON_ERRORS, **CONSISTENCY_ERRORS,
        422: {"description": "Invalid parameters, or starting_after names no payment of the organization",
              **PROBLEM},
        429: {"description": "Another export of this organization is streaming (Retry-After)", **PROBLEM},
    },
)
async def export_payments(
    principal: Reader,
    h: Handlers,
    format: Annotated[ExportFormat, Query(description="csv (a header row) or ndjson")] = ExportFormat.CSV,
    query: SearchText = None,
    starting_after: Annotated[str | None, Query(pattern=PAYMENT_ID_PATTERN, description=(
        "Resume a broken export: the id of the last payment received; the export goes on with the "
        "payments after it in created order"))] = None,
    consistent_with: ConsistentWith = None,
) -> StreamingResponse:
    export = typed(ExportQuery, format=format, query=query, starting_after=starting_after)
    with query_problems():
        payments = await h.export(principal.org, export, consistent_with or ())
    return StreamingResponse(chunks(payments, export.format), media_type=MEDIA_TYPES[export.format],
                             headers={"Content-Disposition": f'attachment; filename="payments.{export.format}"'})
