"""Dead-letter record headers, the same on every dead-letter topic (events and commands).

The original record's bytes are the dead-letter value; these headers say why it was
refused and where it came from, so an operator can inspect it and replay it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def dlq_headers(reason: str, topic: str, partition: int, offset: int, group: str,
                original: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
    headers = [(k, v) for k, v in original if not k.startswith("dlq-")]
    headers += [
        ("dlq-reason", reason.encode()[:2000]),
        ("dlq-source-topic", topic.encode()),
        ("dlq-source-partition", str(partition).encode()),
        ("dlq-source-offset", str(offset).encode()),
        ("dlq-consumer-group", group.encode()),
        ("dlq-time", datetime.now(UTC).isoformat().encode()),
    ]
    return headers
