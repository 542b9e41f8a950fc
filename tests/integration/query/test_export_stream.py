"""GET /v1/payments/export on the real read model behind a real HTTP server: 20,000
payments, every row once and in order; a broken export resumed where it stopped; one
export at a time per organization, freed when the client goes away. (Memory: the bench
twin, bench/export.py.)"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from services.query.adapters.batch_writes import apply_batch
from services.query.entrypoints.http.app import create_app
from services.query.export_format import COLUMNS
from shared.events import EventType, new_event
from tests.support.builders import BASE, snapshot
from tests.support.children import eventually

N = 20_000


def many(org: str, n: int) -> list:
    """``n`` payments, four to a creation instant (so ties are broken by id), ids not in
    created order."""
    return [snapshot(f"e-{(i * 7919) % n:05d}", org, amount=100 + i, created_at=BASE + timedelta(seconds=i // 4))
            .model_copy(update={"metadata": {"batch": str(i % 10)}, "description": "=1+1" if i == 5 else ""})
            for i in range(n)]


def expected_order(payments: list) -> list[str]:
    return [p.id for p in sorted(payments, key=lambda p: (p.created_at, f'["{p.organization_id}","{p.id}"]'))]


async def seeded(runtime, n: int) -> list:  # noqa: ANN001
    payments = many("org-a", n)
    cols = await runtime.read_model.active(fresh=True)
    for i in range(0, n, 2000):
        await apply_batch(runtime.mongo, cols, [new_event(EventType.CREATED, p) for p in payments[i:i + 2000]])
    await apply_batch(runtime.mongo, cols, [new_event(EventType.CREATED, p) for p in many("org-b", 3)])
    return payments


@pytest.fixture
async def big(runtime) -> list:  # noqa: ANN001
    return await seeded(runtime, N)


@pytest.fixture
async def small(runtime) -> list:  # noqa: ANN001
    return await seeded(runtime, 1000)


@pytest.fixture
async def server(qsettings, runtime, serve):  # noqa: ANN001
    app = create_app(qsettings, runtime)
    async with app.router.lifespan_context(app), serve(app) as base_url:
        yield base_url


def rows(text: str) -> list[dict]:
    return [dict(zip(COLUMNS, r, strict=True)) for r in list(csv.reader(io.StringIO(text)))[1:]]


async def test_every_payment_once_in_created_order_then_resumed_after_a_break(big, server, auth):
    """And one export at a time per organization, freed when its client goes away."""
    h = auth("org-a")
    async with httpx.AsyncClient(base_url=server, headers=h, timeout=120) as http:
        full = await http.get("/v1/payments/export", params={"format": "csv"})
        assert full.status_code == 200 and full.headers["content-type"].startswith("text/csv")
        got = rows(full.text)
        assert [r["id"] for r in got] == expected_order(big)  # every row once, in order, org-b's none
        assert next(r for r in got if r["id"] == big[5].id)["description"] == "'=1+1"

        # A broken connection: read part of the stream, then go away.
        received = ""
        async with http.stream("GET", "/v1/payments/export", params={"format": "ndjson"}) as broken:
            async for chunk in broken.aiter_text():
                if not received:  # streaming (20,000 payments take seconds): the organization's slot is taken
                    busy = await http.get("/v1/payments/export")
                    assert busy.status_code == 429 and busy.headers["retry-after"] == "10"
                    assert busy.json()["type"].endswith("export-running")
                    other = await http.get("/v1/payments/export", headers=auth("org-b"))
                    assert other.status_code == 200 and other.text.count("\n") == 4  # bound per organization
                received += chunk
                if len(received) > 300_000:
                    break
        complete = received[: received.rindex("\n") + 1].splitlines()
        assert 0 < len(complete) < N
        last = json.loads(complete[-1])["id"]

        async def resumed() -> httpx.Response | None:  # the broken export's slot is freed
            r = await http.get("/v1/payments/export", params={"format": "ndjson", "starting_after": last})
            return r if r.status_code == 200 else None

        rest = (await eventually(resumed, 10, "the broken export's slot")).text.splitlines()
        assert [json.loads(x)["id"] for x in complete + rest] == expected_order(big)


async def test_a_query_filters_the_export_and_errors_are_problems(small, server, auth):
    async with httpx.AsyncClient(base_url=server, headers=auth("org-a"), timeout=60) as http:
        some = await http.get("/v1/payments/export", params={"query": "metadata['batch']:'3' AND amount<1000"})
        want = [p.id for p in sorted(small, key=lambda p: (p.created_at, f'["org-a","{p.id}"]'))
                if p.metadata["batch"] == "3" and p.amount < 1000]
        assert [r["id"] for r in rows(some.text)] == want and want
        for params, field in [({"query": "status:paid"}, "query"), ({"format": "xml"}, "format"),
                              ({"starting_after": "no-such"}, "starting_after")]:
            bad = await http.get("/v1/payments/export", params=params)
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, bad.text


async def test_the_cli_writes_the_same_export_with_its_progress_on_stderr(qsettings, small, server, auth, tmp_path):
    target = tmp_path / "payments.csv"
    env = {**os.environ, "PAYMENTS_MONGO_URL": qsettings.mongo_url, "PAYMENTS_MONGO_DB": qsettings.mongo_db,
           "PAYMENTS_REDIS_URL": qsettings.redis_url}
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "payments"), "export", "--org", "org-a", "--query", "amount>=600",
        "-o", str(target), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(cli.communicate(), 120)
    assert cli.returncode == 0, err.decode()
    assert "exported 500 payments" in err.decode() and out == b""
    async with httpx.AsyncClient(base_url=server, headers=auth("org-a"), timeout=60) as http:
        via_http = await http.get("/v1/payments/export", params={"query": "amount>=600"})
    assert via_http.status_code == 200, via_http.text
    assert target.read_bytes() == via_http.content and len(rows(via_http.text)) == 500
