"""Reconciliation of payments' histories (pure): gaps, altered versions and versions beyond
the log, each with the write that repairs it; what is in flight or unverifiable is not drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.query.history import history_document
from services.tools.reconcile import Drift
from services.tools.reconcile_history import HistoryDrift, compare_history
from shared.events import EventType, new_event
from tests.support.builders import snapshot

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


def log(versions: range, pid: str = "p") -> dict[int, dict]:
    first = snapshot(pid, "org-a", created_at=T0)
    out = {}
    for v in versions:
        payment = first.model_copy(update={"version": v, "amount": 100 + v})
        kind = EventType.CREATED if v == 1 else EventType.UPDATED
        out[v] = history_document(new_event(kind, payment, actor="a", command_id=f"c{v}", time=T0 + timedelta(seconds=v)))
    return out


def settled(doc) -> bool:
    return doc["time"] <= T0 + timedelta(seconds=4)


def test_a_gap_an_altered_version_and_one_beyond_the_log_are_drift_with_their_repairs() -> None:
    truth = log(range(1, 5))
    held = {1: truth[1], 3: {**truth[3], "actor": "mallory"}, 4: truth[4], 7: {**truth[4], "_id": "x", "version": 7}}
    drift = HistoryDrift()
    writes = compare_history("p", truth, held, settled, drift)
    assert (drift.missing, drift.stale, drift.extra) == (["p@2"], ["p@3"], ["p@7"])
    assert len(writes) == 3


def test_versions_in_flight_and_older_than_the_log_are_not_drift() -> None:
    truth = log(range(3, 7))  # versions 1-2 purged before the log was kept; 5-6 in flight
    held = {1: {"_id": "h1", "version": 1}, 3: truth[3], 4: truth[4]}
    drift = HistoryDrift()
    assert compare_history("p", truth, held, settled, drift) == []
    assert (drift.missing, drift.stale, drift.extra) == ([], [], [])


def test_history_drift_counts_in_the_total() -> None:
    drift = Drift(history_missing=["p@2"], history_stale=["p@3"])
    assert drift.total == 2 and drift.counts()["history_missing"] == 1
