"""Create the Kafka topics a process needs when they are missing (idempotent).

A real deployment creates its topics up front; this keeps a fresh or memory-only
broker (the local stack) working, and is a no-op where the topics already exist.
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger("payments.kafka")


async def ensure_topics(bootstrap: str, partitions: dict[str, int], *, replication_factor: int = 1) -> None:
    """Create each missing topic of ``{name: partitions}``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, num_partitions=n, replication_factor=replication_factor)
                   for name, n in partitions.items() if name not in existing]
        if missing:
            await admin.create_topics(missing)
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()
