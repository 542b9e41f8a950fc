"""Fixtures of the whole-system tests (tests/integration/test_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import Endpoints, LocalStack
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver; ``receiver.env()`` makes a process export to it."""
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def private_temporal(stack: Endpoints, scratch_dir: Path) -> Iterator[LocalStack]:
    """A Temporal dev server of this test, persistent (its SQLite file), which it restarts."""
    own = LocalStack(scratch_dir / "temporal", persist=True, headless=True, write_stack_file=False,
                     database_url=stack.database_url, kafka_bootstrap=stack.kafka_bootstrap,
                     mongo_url=stack.mongo_url, redis_url=stack.redis_url)
    own.start()
    yield own
    own.stop()
