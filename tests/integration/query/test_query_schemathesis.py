"""The query API's OpenAPI document says exactly what the server enforces (issue 11.7)."""

from __future__ import annotations

from services.query.entrypoints.http.app import create_app
from shared.auth import SCOPE_READ, mint_token
from tests.support.read_side import payments_of, seed


async def test_schemathesis_finds_nothing(qsettings, runtime, serve, schemathesis_run) -> None:  # noqa: ANN001
    await seed(runtime, payments_of("org-schemathesis", 30))
    token = mint_token("org-schemathesis", [SCOPE_READ], settings=qsettings)
    # min_version waits for versions that never come: keep each such case short.
    runtime.handlers.max_wait = 0.2
    async with serve(create_app(qsettings, runtime)) as base_url:
        code, output = await schemathesis_run(base_url, token)
    assert code == 0, output[-20000:]
