"""Dead-letter record headers, the same on every dead-letter topic (events and commands).

The original record's bytes are the dead-letter value; these headers say why it was
refused and where it came from, so an operator can inspect it and redrive it
(``payments dlq``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from shared.tracing import TRACE_FIELDS

REDRIVE_HEADER = "dlq-redrive-count"  # how many times `payments dlq redrive` re-submitted it


def dlq_headers(reason: str, topic: str, partition: int, offset: int, group: str,
                original: Sequence[tuple[str, bytes]] = (), *, kind: str = "invalid") -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: the original's (but earlier ``dlq-*`` ones and its
    W3C trace context: a record carries its own hop's, which the Kafka instrumentation adds),
    the reason, its kind (invalid, refused, error) and the origin. ``dlq-redrive-count``
    survives, so a redriven record that fails again is recognised."""
    headers = [(k, v) for k, v in original
               if (not k.startswith("dlq-") or k == REDRIVE_HEADER) and k not in TRACE_FIELDS]
    headers += [
        ("dlq-reason", reason.encode()[:2000]),
        ("dlq-kind", kind.encode()),
        ("dlq-source-topic", topic.encode()),
        ("dlq-source-partition", str(partition).encode()),
        ("dlq-source-offset", str(offset).encode()),
        ("dlq-consumer-group", group.encode()),
        ("dlq-time", datetime.now(UTC).isoformat().encode()),
    ]
    return headers
