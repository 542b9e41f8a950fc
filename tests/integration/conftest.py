"""Fixtures of the whole-system tests (tests/integration/test_*.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver; ``receiver.env()`` makes a process export to it."""
    with otlp_receiver() as running:
        yield running
