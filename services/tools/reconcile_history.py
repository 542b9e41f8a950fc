"""``payments reconcile``'s history part (issue 23): each payment's history on the read side
against PostgreSQL's event log, version by version: a version the log holds and the read
side lacks is **missing** (a gap), one it holds otherwise (another event, actor, command or
snapshot: hence other changes) is **stale**, one beyond the log's newest is **extra**; with
``repair``, written (or removed) from the log. Both sides are read as streams ordered by
payment and version and merged, one payment's versions in memory at a time.

Payments whose log starts after version 1 (rows purged before migration 004 kept them)
are compared on the versions the log still holds: nothing older can be checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import DeleteOne, ReplaceOne

from services.query.history import history_document
from shared.events import parse_event

# What a history document must hold as the log says (the changes follow from `payment`).
COMPARED = ("event_type", "event_id", "actor", "command_id", "payment")
# Byte order on both sides (PostgreSQL's "C" collation, MongoDB's binary comparison), the
# order Python compares the ids in.
LOG = ("SELECT payment_id, payload FROM outbox WHERE organization_id = $1"
       ' ORDER BY payment_id COLLATE "C", payment_version')


@dataclass(slots=True)
class HistoryDrift:
    missing: list[str] = field(default_factory=list)  # "<payment id>@<version>"
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def compare_history(pid: str, truth: Mapping[int, Mapping[str, Any]], held: Mapping[int, Mapping[str, Any]],
                    settled: Callable[[Mapping[str, Any]], bool], drift: HistoryDrift) -> list[Any]:
    """Add one payment's differences to ``drift`` (pure); the writes that repair them."""
    writes: list[Any] = []
    for version in sorted(truth):
        want, have = truth[version], held.get(version)
        if not settled(want):
            continue
        if have is None or any(have.get(k) != want[k] for k in COMPARED):
            (drift.missing if have is None else drift.stale).append(f"{pid}@{version}")
            writes.append(ReplaceOne({"_id": want["_id"]}, dict(want), upsert=True))
    newest = max(truth, default=None)
    for version in sorted(held):
        if newest is not None and version > newest:
            drift.extra.append(f"{pid}@{version}")
            writes.append(DeleteOne({"_id": held[version]["_id"], "version": version}))
    return writes


async def _grouped(rows: AsyncIterator[tuple[str, int, dict[str, Any]]]) -> AsyncIterator[tuple[str, dict]]:
    current: str | None = None
    group: dict[int, dict[str, Any]] = {}
    async for pid, version, doc in rows:
        if pid != current and current is not None:
            yield current, group
            group = {}
        current = pid
        group[version] = doc
    if current is not None:
        yield current, group


class HistoryReconciler:
    def __init__(self, pool: Any, read_model: Any, grace: timedelta) -> None:
        self.pool = pool
        self.read_model = read_model
        self.grace = grace

    async def run(self, org: str, *, repair: bool, now: datetime) -> tuple[HistoryDrift, int]:
        """The organization's history drift (and with ``repair`` the writes applied)."""
        cols = await self.read_model.active(fresh=True)
        horizon = now - self.grace
        drift, applied = HistoryDrift(), 0

        def settled(doc: Mapping[str, Any]) -> bool:
            return bool(doc["time"] <= horizon)

        async def log_rows() -> AsyncIterator[tuple[str, int, dict[str, Any]]]:
            async with self.pool.acquire() as conn, conn.transaction(readonly=True):
                async for row in conn.cursor(LOG, org, prefetch=500):
                    doc = history_document(parse_event(bytes(row["payload"])))
                    yield row["payment_id"], doc["version"], doc

        async def held_rows() -> AsyncIterator[tuple[str, int, dict[str, Any]]]:
            async for doc in cols.history.find({"organization_id": org}, sort=[("payment_id", 1), ("version", 1)]):
                yield doc["payment_id"], doc["version"], doc

        truth, held = _grouped(log_rows()), _grouped(held_rows())
        t, h = await anext(truth, None), await anext(held, None)
        while t is not None or h is not None:
            if h is None or (t is not None and t[0] < h[0]):
                assert t is not None
                writes = compare_history(t[0], t[1], {}, settled, drift)
                t = await anext(truth, None)
            elif t is None or h[0] < t[0]:
                writes, h = [], await anext(held, None)  # a payment absent from the log: not checkable
            else:
                writes = compare_history(t[0], t[1], h[1], settled, drift)
                t, h = await anext(truth, None), await anext(held, None)
            if repair and writes:
                result = await cols.history.bulk_write(writes, ordered=False)
                applied += result.upserted_count + result.modified_count + result.deleted_count
        return drift, applied
