"""The session's Kafka broker as the tests see it, and private brokers of a test.

tests/conftest.py starts the session on Apache Kafka wherever java 17+ and mvn exist (else
noida-db) and exports the broker's name as PAYMENTS_STACK_KAFKA (empty for an external Kafka).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from devstack import Endpoints, LocalStack
from devstack.brokers import BROKERS
from devstack.brokers import session_broker as devstack_session_broker
from shared.settings import Settings


def session_broker() -> str:
    """The session's broker (apache, noida or tansu); empty for an external Kafka. Before
    the session's stack started (a test that needs none), the broker it would start."""
    name = os.environ.get("PAYMENTS_STACK_KAFKA")
    return devstack_session_broker()[0] if name is None else name


def static_members() -> bool:
    """Whether the session's broker needs static group instance ids (noida-db)."""
    broker = BROKERS.get(session_broker())
    return broker is not None and broker.static_members


def keeping_broker() -> str:
    """The session's kind of broker if it keeps its log across a restart (not Tansu), else noida-db."""
    broker = BROKERS.get(session_broker())
    return broker.name if broker is not None and broker.keeps_data else "noida"


@contextlib.contextmanager
def private_kafka(data_dir: Path, settings: Settings, broker: str | None = None) -> Iterator[tuple[LocalStack, Endpoints]]:
    """A LocalStack of the test that starts only a Kafka broker (the session's kind unless
    ``broker`` is given), so that the test can stop and restart it; every other server is
    the session's."""
    stack = LocalStack(data_dir, headless=True, write_stack_file=False, kafka_broker=broker or session_broker() or "noida",
                       external_timeout=30, database_url=settings.database_url, redis_url=settings.redis_url,
                       temporal_address=settings.temporal_address, mongo_url=settings.mongo_url)
    try:
        yield stack, stack.start()
    finally:
        stack.stop()
