"""The command API's OpenAPI document says exactly what the server enforces (issue 11.7)."""

from __future__ import annotations

from services.command.entrypoints.http.app import create_app
from shared.auth import SCOPE_WRITE, mint_token


async def test_schemathesis_finds_nothing(runtime, serve, schemathesis_run) -> None:  # noqa: ANN001
    token = mint_token("org-schemathesis", [SCOPE_WRITE], settings=runtime.settings)
    async with serve(create_app(runtime=runtime)) as base_url:
        code, output = await schemathesis_run(base_url, token)
    assert code == 0, output[-20000:]
