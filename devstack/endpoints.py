"""Where the local stack's servers answer: names, the ``Endpoints`` record, ``StackError``
and ``<data_dir>/stack.json`` (read here; written by ``LocalStack`` through
``write_stack_file``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.net import redact_url as redact  # noqa: F401 - part of this module's API
from shared.settings import DEFAULT_DATA_DIR, STACK_FILE_NAME

HOST = "127.0.0.1"

#: Names of the servers, in start order. Also the keys of ``ports``, ``binaries``, ``pids``.
SERVICES = ("temporal", "kafka", "mongo", "postgres", "redis")
#: Keys accepted in ``LocalStack(ports=...)``.
PORT_NAMES = ("temporal", "temporal_ui", "kafka", "mongo", "postgres", "redis")


class StackError(Exception):
    """A problem starting or reaching the local stack. The message is one line that
    says what went wrong and what to do."""


@dataclass
class Endpoints:
    """Where the servers of a stack answer (plus the pids of those we started)."""

    database_url: str
    kafka_bootstrap: str
    mongo_url: str
    redis_url: str
    temporal_address: str
    temporal_namespace: str = "default"
    temporal_ui_url: str | None = None
    #: name -> pid of each server process this stack started (empty for external ones)
    pids: dict[str, int] = field(default_factory=dict)
    #: other Settings values the processes need on this stack (e.g. one-broker topics)
    client_settings: dict[str, Any] = field(default_factory=dict)

    def as_settings(self) -> dict[str, Any]:
        """The endpoints as ``shared.settings.Settings`` field values."""
        return {
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "mongo_url": self.mongo_url,
            "redis_url": self.redis_url,
            "temporal_address": self.temporal_address,
            "temporal_namespace": self.temporal_namespace,
            "temporal_ui_url": self.temporal_ui_url,
            **self.client_settings,
        }

    def as_env(self) -> dict[str, str]:
        """The endpoints as ``PAYMENTS_*`` environment variables (None values left out)."""
        return {
            f"PAYMENTS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in self.as_settings().items()
            if v is not None
        }

    @classmethod
    def from_settings(
        cls, values: Mapping[str, Any], pids: Mapping[str, int] | None = None
    ) -> Endpoints:
        """Build from a dict of Settings field values (e.g. stack.json's ``settings``)."""
        names = {
            "database_url",
            "kafka_bootstrap",
            "mongo_url",
            "redis_url",
            "temporal_address",
            "temporal_namespace",
            "temporal_ui_url",
        }
        return cls(**{k: v for k, v in values.items() if k in names}, pids=dict(pids or {}))


def read_stack_file(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> dict[str, Any] | None:
    """Contents of ``<data_dir>/stack.json``, or None."""
    path = Path(data_dir) / STACK_FILE_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_stack_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` (stack.json) atomically: a temporary file
    beside it, then a rename."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
