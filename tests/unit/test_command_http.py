"""HTTP helpers of the command API that need no server."""

from __future__ import annotations

import pytest

from services.command.entrypoints.http.headers import parse_if_match, wants_async
from shared.http import ProblemError


@pytest.mark.parametrize(("header", "version"), [("3", 3), ('"3"', 3), ('W/"12"', 12), (" 7 ", 7), ("*", None),
                                                 (None, None)])
def test_if_match_accepts_plain_and_etag_forms(header, version):
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ["abc", "0", "-1", '"3', "3.0", '"3", "4"'])
def test_if_match_rejects_anything_else(header):
    with pytest.raises(ProblemError) as caught:
        parse_if_match(header)
    assert caught.value.status == 400


@pytest.mark.parametrize(("prefer", "wanted"), [("respond-async", True), ("respond-async, wait=10", True),
                                                ("wait=5; respond-async", True), ("return=minimal", False),
                                                (None, False), ("", False)])
def test_prefer_respond_async(prefer, wanted):
    assert wants_async(prefer) is wanted
