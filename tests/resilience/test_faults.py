"""A short fault campaign (bench/faults.py) under load, on a private persistent stack:
each server restarted, processes killed, and the combinations that once lost data or
served stale answers. Every invariant must hold afterwards and no client saw a 500.

The long campaign is ``python -m bench.faults`` (docs/operations.md).
"""

from __future__ import annotations

import os

import pytest

from bench.faults import run

pytestmark = pytest.mark.resilience


@pytest.fixture(autouse=True)
def _own_stack_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign runs its own stack: none of the session's PAYMENTS_* (CI's servers, the
    session stack's Kafka client settings) may reach its processes."""
    for key in [k for k in os.environ if k.startswith("PAYMENTS_") and k != "PAYMENTS_DATA_DIR"]:
        monkeypatch.delenv(key)


# One broker (the default, noida-db) takes every fault: a projector killed and started again
# (static group membership) and Kafka restarted (a persistent log), in one run.
SHORT_CAMPAIGN = [
    "kill:projector", "kill:relay", "restart:kafka", "restart:postgres", "restart:mongo", "restart:redis",
    "projector-killed-while-redis-down", "relay-killed-while-postgres-restarts", "kafka-restart-under-load",
]


@pytest.mark.timeout(420)
async def test_short_fault_campaign_loses_nothing(scratch_dir) -> None:  # noqa: ANN001
    problems, log, text = await run(SHORT_CAMPAIGN, rate=8.0, settle=2.0, root=scratch_dir)
    print(text)
    assert not problems, text
    assert log.acked, "the load acknowledged nothing: the campaign proved nothing"
    assert not [status for status in log.statuses if status.startswith("5") and status != "503"], text
