"""Settings of the command service: the shared Settings plus a few knobs of its own.

Every field reads ``PAYMENTS_<NAME>`` from the environment like the shared ones, e.g.
``PAYMENTS_COMMAND_API_EMBEDDED_WORKER=false``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shared.settings import Settings


class CommandSettings(Settings):
    # The API process hosts a command worker on the same Temporal client, which is what
    # makes eager workflow start possible (the first workflow task is handed straight
    # back to this process instead of going through a task-queue poll). Trade-off: the
    # API process then also executes workflow code and database writes, so API replicas
    # and worker capacity scale together; a separate `payments command-worker` still
    # takes whatever the API replicas do not (or all of it, with this set to false).
    command_api_embedded_worker: bool = True
    command_eager_start: bool = True
    # With the embedded worker: answer as soon as this process's local activity has
    # committed, instead of reading the result back from the workflow history (the
    # committed result is final: a retried activity returns the same stored result).
    command_local_results: bool = True
    # How long a synchronous HTTP command waits for its workflow before answering 202
    # with the command status URL.
    command_wait_timeout_seconds: float = Field(default=15.0, gt=0)
    command_workflow_timeout_seconds: float = Field(default=300.0, gt=0)
    command_max_batch_items: int = Field(default=100, ge=1, le=1000)
    # Group commit (issue 14, services/command/temporal/group_commit.py): creates and
    # modifications that arrive while an execution is in flight run as one workflow and
    # one transaction (a savepoint each); an idle API still starts each command at once.
    # Measured in docs/benchmarks.md ("Group commit").
    command_group_commit: bool = True
    # 64: each item's savepoint is a subtransaction with its own XID, and PostgreSQL caches
    # 64 of them per transaction; past that, other sessions' snapshots get slower.
    command_group_commit_max_items: int = Field(default=64, ge=2, le=1000)
    # JSON bytes of the commands in one batch (the batch is one Temporal payload).
    command_group_commit_max_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    # Executions (single commands or batches) of one process running at once before
    # arriving commands queue for the next batch.
    command_group_commit_in_flight: int = Field(default=1, ge=1, le=64)
    # After a batch, hold the queue until it is as big again or for as long as that batch
    # took, at most this long (0: never): its callers' next commands then join one batch
    # instead of queueing behind a lone one. A command reaching an idle API never waits.
    command_group_commit_max_hold_seconds: float = Field(default=0.05, ge=0, le=1)
    database_pool_size: int = Field(default=10, ge=1)

    # Outbox relay
    relay_batch_size: int = Field(default=200, ge=1)
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0)
    relay_retry_backoff_seconds: float = Field(default=0.5, gt=0)
    relay_max_backoff_seconds: float = Field(default=10.0, gt=0)
    relay_send_timeout_seconds: float = Field(default=15.0, gt=0)
    # An Idempotency-Key replays its first response for this long (then it may be reused).
    idempotency_key_retention_seconds: float = Field(default=24 * 3600, ge=0)
    # How often the relay purges expired idempotency keys (outbox rows are never purged).
    outbox_purge_interval_seconds: float = Field(default=300.0, gt=0)

    # Command intake (`payments intake`). Kafka consumer defaults are a real cluster's:
    # brokers refuse sessions under group.min.session.timeout.ms (6 s by default); the
    # local stack (Tansu, where a join takes session/2) sets 2000 in its stack file.
    intake_group: str = "payments-intake"
    intake_max_poll_interval_ms: int = Field(default=300_000, ge=1)
    intake_max_poll_records: int = Field(default=200, ge=1)
    # Payments (message keys) run concurrently; one payment's commands stay in order.
    intake_concurrency: int = Field(default=32, ge=1)
    # A command whose workflow fails (not a business rejection) this many times is
    # dead-lettered, so that it cannot stall its partition; outages are retried forever.
    intake_max_attempts: int = Field(default=5, ge=1)
    intake_retry_backoff_seconds: float = Field(default=0.5, gt=0)
    intake_max_backoff_seconds: float = Field(default=10.0, gt=0)
    # Run a poll's leading creates of one organization as one BulkCreatePayments workflow
    # (per-command results kept): fewer workflow executions on a backlog (bench/intake.py,
    # docs/benchmarks.md).
    intake_batch_creates: bool = True
    # Host a command worker (eager workflow start, results handed over in process).
    intake_embedded_worker: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CommandSettings:
        """Extend shared settings (e.g. the test fixture's) with this service's defaults."""
        values = settings.model_dump()
        values.update(overrides)
        return cls(**values)
