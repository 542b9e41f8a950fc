"""The fault campaign (bench/faults.py) under load, on a private persistent stack of the
session's kind of broker (Apache Kafka wherever java 17+ and mvn exist): every fault and
every combination the broker allows (on Apache Kafka all of them), at a lower rate and
with shorter pauses than ``python -m bench.faults``. Every invariant must hold afterwards,
each SIGKILLed dynamic group member must consume again within the session timeout + 5 s,
and no client saw a 500.
"""

from __future__ import annotations

import os

import pytest

from bench.fault_injection import ALL_FAULTS, UNSUPPORTED
from bench.faults import run
from tests.support.brokers import keeping_broker

pytestmark = pytest.mark.resilience


@pytest.fixture(autouse=True)
def _own_stack_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign runs its own stack: none of the session's PAYMENTS_* (CI's servers, the
    session stack's Kafka client settings) may reach its processes."""
    for key in [k for k in os.environ if k.startswith("PAYMENTS_") and k not in ("PAYMENTS_DATA_DIR",
                                                                                  "PAYMENTS_STACK_KAFKA")]:
        monkeypatch.delenv(key)


@pytest.mark.timeout(600)
async def test_fault_campaign_loses_nothing(scratch_dir) -> None:  # noqa: ANN001
    broker = keeping_broker()  # the session's (tests/conftest.py), unless it keeps no log (Tansu)
    faults = [f for f in ALL_FAULTS if f not in UNSUPPORTED[broker]]
    problems, log, text = await run(faults, rate=8.0, settle=1.5, root=scratch_dir, kafka=broker)
    print(text)
    assert not problems, text
    assert log.acked, "the load acknowledged nothing: the campaign proved nothing"
    assert not [status for status in log.statuses if status.startswith("5") and status != "503"], text
