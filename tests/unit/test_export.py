"""Export, pure and on in-memory ports: CSV cells made inert against formula injection,
the CSV and NDJSON text, and the handler's one export at a time per organization (released
however the stream ends). On MongoDB and HTTP: tests/integration/query/test_export_stream.py."""

from __future__ import annotations

import csv
import gc
import io
import json
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.query.export_format import COLUMNS, ExportFormat, chunks, csv_cells, inert
from services.query.handlers import QueryHandlers, UnknownStartingPayment
from services.query.ports import ExportBusy
from services.query.queries import ExportQuery
from shared.payment_view import Payment
from tests.support.builders import BASE, snapshot
from tests.support.query_fakes import FakeExportSlots, FakeReadModel


def payment(pid: str = "p-1", **changes) -> Payment:  # noqa: ANN003
    return Payment.of(snapshot(pid).model_copy(update=changes))


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_evaluate_is_made_inert(start):  # noqa: ANN001
    hostile = payment(description=start + "HYPERLINK(\"http://x\")", user_id=start + "1+1",
                      metadata={"=k": start + "cmd"})
    cells = dict(zip(COLUMNS, csv_cells(hostile), strict=True))
    assert cells["description"] == "'" + hostile.description
    assert cells["user_id"] == "'" + start + "1+1"
    assert json.loads(cells["metadata"]) == {"=k": start + "cmd"}  # JSON starts with "{": already inert


@given(st.text())
def test_inert_changes_only_what_a_formula_could_start(text):  # noqa: ANN001
    made = inert(text)
    assert made == text or (made == "'" + text and text[:1] in ("=", "+", "-", "@", "\t", "\r"))
    assert not made.startswith(("=", "+", "-", "@", "\t", "\r"))


async def _text(payments: list[Payment], fmt: ExportFormat) -> str:
    async def each():  # noqa: ANN202
        for p in payments:
            yield p

    return "".join([c async for c in chunks(each(), fmt)])


async def test_csv_has_a_header_minor_units_a_formatted_amount_and_metadata_as_json():
    p = payment(amount=123456, currency="EUR", metadata={"order": "A-1", "n": 2}, description='say "hi", ok')
    rows = list(csv.reader(io.StringIO(await _text([p] * 450, ExportFormat.CSV))))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 451
    row = dict(zip(COLUMNS, rows[1], strict=True))
    assert (row["amount"], row["amount_formatted"], row["description"]) == ("123456", "1234.56 EUR", 'say "hi", ok')
    assert json.loads(row["metadata"]) == {"order": "A-1", "n": 2}
    assert await _text([], ExportFormat.CSV) == ",".join(COLUMNS) + "\r\n"


async def test_ndjson_is_one_payment_a_line():
    ps = [payment(f"p-{i}") for i in range(3)]
    lines = (await _text(ps, ExportFormat.NDJSON)).splitlines()
    assert [Payment.model_validate_json(line) for line in lines] == ps


def _handlers() -> tuple[QueryHandlers, FakeReadModel, FakeExportSlots]:
    read_model, slots = FakeReadModel(), FakeExportSlots()
    for i in range(5):
        read_model.project(snapshot(f"p-{i}", "org-a", created_at=BASE + timedelta(minutes=i % 3)))
    return QueryHandlers(read_model, None, max_wait=1.0, export_slots=slots), read_model, slots


async def test_one_export_at_a_time_per_organization_released_however_the_stream_ends():
    h, _, slots = _handlers()
    stream = await h.export("org-a", ExportQuery())
    with pytest.raises(ExportBusy):
        await h.export("org-a", ExportQuery())
    other = await h.export("org-b", ExportQuery())  # another organization is not bound
    assert [p async for p in other] == []
    assert [p.id async for p in stream] == ["p-0", "p-3", "p-1", "p-4", "p-2"]  # created order, ties by id
    assert slots.held == set()
    broken = await h.export("org-a", ExportQuery())
    await anext(broken)
    await broken.aclose()  # the client went away mid-stream
    assert slots.held == set()
    await h.export("org-a", ExportQuery())  # never read, then dropped
    gc.collect()
    assert slots.held == set()


async def test_a_resumed_export_goes_on_after_the_last_payment_received():
    h, _, _ = _handlers()
    assert [p.id async for p in await h.export("org-a", ExportQuery(starting_after="p-1"))] == ["p-4", "p-2"]
    with pytest.raises(UnknownStartingPayment, match="starting_after"):
        await h.export("org-a", ExportQuery(starting_after="nope"))
