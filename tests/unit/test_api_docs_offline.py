"""/docs and /redoc work offline: every asset they load is served by the API itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.command.entrypoints.http.app import create_app as command_app
from services.query.entrypoints.http.app import create_app as query_app
from shared.settings import Settings


@pytest.mark.parametrize("make", [command_app, query_app])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_documentation_pages_load_only_local_assets(make, page) -> None:  # noqa: ANN001
    client = TestClient(make(Settings()))
    html = client.get(page).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
