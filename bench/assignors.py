"""How many partitions change owner at a rebalance, with the sticky assignor the projector
and the intake use (shared.kafka.sticky_assignor) against aiokafka's round-robin default,
on the stack's broker: a group of three consumers of a 12-partition topic, then one
leaves (SIGTERM-like: LeaveGroup), then a new one joins. A partition that moves is a
batch revoked from one member and read again by another (harmless, but work); the
minimum at each step is what must move to balance the group.

    payments stack up --detach --kafka apache
    python -m bench.assignors --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from shared.kafka import TopicSpec, ensure_topics, sticky_assignor
from shared.settings import Settings

PARTITIONS = 12


async def _settled(members: list[AIOKafkaConsumer], topic: str, timeout: float = 60) -> dict[int, int]:
    """partition -> index of its owner, once the members hold every partition exactly once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owners: dict[int, int] = {}
        clash = False
        for i, member in enumerate(members):
            for tp in member.assignment():
                clash |= tp.partition in owners
                owners[tp.partition] = i
        if not clash and len(owners) == PARTITIONS:
            return owners
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the group of {topic} did not settle")


def _moved(before: dict[int, int], after: dict[int, int], ids: dict[int, str], ids_after: dict[int, str]) -> int:
    return sum(1 for p in range(PARTITIONS) if ids.get(before[p]) != ids_after.get(after[p]))


async def one_round(settings: Settings, assignor: type) -> tuple[int, int, float, float]:
    """(partitions moved when one of three leaves, when a fourth joins, seconds of each rebalance)."""
    topic = f"bench.assignors-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, PARTITIONS, 1, 1)], create=True)
    group = f"g-{topic}"

    def member() -> AIOKafkaConsumer:
        chosen = sticky_assignor() if assignor is None else assignor
        return AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                partition_assignment_strategy=(chosen,), session_timeout_ms=10_000,
                                heartbeat_interval_ms=1000)

    names = {0: "a", 1: "b", 2: "c"}
    members = [member() for _ in names]
    joining = member()
    for m in members:
        await m.start()
    try:
        before = await _settled(members, topic)
        started = time.monotonic()
        await members[1].stop()  # leaves the group
        rest = [members[0], members[2]]
        after_leave = await _settled(rest, topic)
        leave_s = time.monotonic() - started
        moved_leave = _moved(before, after_leave, names, {0: "a", 1: "c"})
        started = time.monotonic()
        await joining.start()
        after_join = await _settled([*rest, joining], topic)
        join_s = time.monotonic() - started
        moved_join = _moved(after_leave, after_join, {0: "a", 1: "c"}, {0: "a", 1: "c", 2: "d"})
        return moved_leave, moved_join, leave_s, join_s
    finally:
        for m in [*members, joining]:  # stopping one that stopped, or never started, is fine
            await m.stop()


async def run(rounds: int) -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # each rebalance logs refused heartbeats
    settings = Settings()
    print(f"broker {settings.kafka_bootstrap}; {PARTITIONS} partitions; 3 members, one leaves, one joins; "
          f"{rounds} rounds each (minimum to balance: 0 moved when one leaves beyond its own {PARTITIONS // 3}, "
          f"{PARTITIONS // 3} when one joins)")
    print("| assignor | moved besides the leaver's (one leaves) | moved (one joins) | rebalance s (leave / join) |")
    print("|---|---|---|---|")
    for name, assignor in (("round robin (aiokafka default)", RoundRobinPartitionAssignor), ("sticky (ours)", None)):
        results = [await one_round(settings, assignor) for _ in range(rounds)]
        leave = [r[0] - PARTITIONS // 3 for r in results]
        print(f"| {name} | {', '.join(map(str, leave))} | {', '.join(str(r[1]) for r in results)} | "
              f"{', '.join(f'{r[2]:.1f} / {r[3]:.1f}' for r in results)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per assignor (default 3, at most 10)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
