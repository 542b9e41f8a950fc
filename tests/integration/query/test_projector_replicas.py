"""Two projector replicas in one consumer group on the session's broker (noida-db by
default): a second replica joins mid-stream, the first is SIGKILLed and started again in
its slot, the second stops for good. Nothing may be lost or counted twice.

Slot 0 is a static group member (PAYMENTS_KAFKA_GROUP_INSTANCE_ID, as the local stack
gives it): started again after a SIGKILL it takes its partitions back at once. The extra
replica is dynamic, so it leaves the group on SIGTERM (a static member would not, and
noida-db never expires one; docs/design.md section 11).
"""

from __future__ import annotations

import asyncio
import re
import time

from shared.events import EventType, new_event
from shared.net import free_port
from shared.payment import PaymentStatus
from tests.support.builders import recount, snapshot
from tests.support.children import ProjectorProcess, eventually
from tests.support.read_side import payments_from_mongo, statistics_from_mongo

PAYMENTS = 240
PHASES = 4  # the stream is produced in four parts, one before each step


def _projected(metrics: str) -> float:
    """Events this replica projected (its payments_projection_events_total, any result)."""
    return sum(float(m.group(1)) for m in re.finditer(r"^payments_projection_events_total\{[^}]*\} (\S+)$",
                                                      metrics, re.M))


async def test_two_replicas_rebalance_and_lose_or_double_count_nothing(qsettings, runtime, producer, tmp_path):
    payments = [snapshot(f"rep{i}", f"org-{i % 3}", amount=100 + i, currency=("EUR", "JPY")[i % 2])
                for i in range(PAYMENTS)]
    part = PAYMENTS // PHASES

    async def produce(phase: int, pause: float = 0.0) -> None:
        for p in payments[phase * part:(phase + 1) * part]:  # created, completed, a duplicate creation
            await asyncio.sleep(pause)
            created = new_event(EventType.CREATED, p)
            done = new_event(EventType.STATUS_CHANGED,
                             p.model_copy(update={"status": PaymentStatus.COMPLETED, "version": 2}))
            for event in (created, done, created):
                await producer.send(qsettings.events_topic, event.to_json_bytes(), key=event.subject.encode())
        await producer.flush()

    async def completed(n: int) -> bool:
        cols = await runtime.read_model.active(fresh=True)
        return await cols.payments.count_documents({"status": "completed"}) >= n

    first = ProjectorProcess(qsettings, tmp_path, "--batch-size", "10", slot=0)
    extra = ProjectorProcess(qsettings.model_copy(update={"projector_metrics_port": free_port()}), tmp_path,
                             "--batch-size", "10", slot=None)
    try:
        first.start()
        await first.ready()
        await produce(0)
        await eventually(lambda: completed(part), 60, "the first part, by one replica")

        extra.start()
        await extra.ready()
        await produce(1, pause=0.1)  # spread over the group's rebalance (a join takes ~3 s)

        async def extra_projects() -> bool:
            return _projected(await extra.metrics()) > 0

        await eventually(extra_projects, 60, "the extra replica projecting its share (a rebalance)")

        assert first.kill() == -9  # slot 0 crashes mid-stream and comes back in its slot
        await produce(2)
        first.start()
        await first.ready()
        await eventually(lambda: completed(3 * part), 60, "the first three parts, after the restart")

        stopping = time.monotonic()
        extra.stop()  # SIGTERM: stops for good, leaves the group
        assert extra.proc is not None and extra.proc.returncode == 0, extra.logs()
        assert time.monotonic() - stopping < 20, "the extra replica lingered after SIGTERM"
        await produce(3)  # every partition is the first replica's again
        await eventually(lambda: completed(PAYMENTS), 60, "every payment, by the remaining replica")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{first.logs()}\n{extra.logs()}") from None
    finally:
        first.stop()
        extra.stop()
    stored = await payments_from_mongo(runtime)
    assert len(stored) == PAYMENTS
    statistics = await statistics_from_mongo(runtime)
    assert statistics == recount(stored)
    assert sum(b["count"] for b in statistics.values()) == PAYMENTS
