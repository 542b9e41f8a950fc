"""The one table of the ``payments`` processes (sub-command, entry point, port, the servers
it waits for, the metrics it exports, the consumer group it joins: on noida-db the local
stack gives its members static ids), read by the CLI,
start-up checks, telemetry, the local stack, the container health check and the deploy
tests. Standard library only: the image's health check imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMAND, QUERY, TOOLS, WEBHOOKS = "command", "query", "tools", "webhooks"


@dataclass(frozen=True)
class Process:
    name: str  # the `payments` sub-command
    wing: str  # COMMAND, QUERY, WEBHOOKS or TOOLS: whose code runs it
    entrypoint: str  # "module:function" registered as the sub-command
    needs: tuple[str, ...]  # servers it waits for before it starts
    port_field: str | None = None  # Settings field of its port; None for a one-shot command
    port_default: int | None = None
    api: bool = False  # serves an HTTP API (else its port serves only the ops endpoints)
    verifies_tokens: bool = False  # checks bearer tokens (and signs cursors) with the configured keys
    metrics: tuple[str, ...] = ()
    group_field: str | None = None  # Settings field of the Kafka consumer group it joins

    @property
    def long_running(self) -> bool:
        return self.port_field is not None

    @property
    def port_setting(self) -> str:
        """The Settings field of its port; a one-shot command has none (ValueError)."""
        if self.port_field is None:
            raise ValueError(f"{self.name} is a one-shot command: it has no port")
        return self.port_field

    @property
    def port_env(self) -> str:
        """The environment variable that moves its port (``PAYMENTS_<PORT_FIELD>``)."""
        return f"PAYMENTS_{self.port_setting.upper()}"


_COMMANDS = ("payments_commands", "payments_command_duration_seconds")
_QUERIES = ("payments_queries", "payments_query_duration_seconds", "payments_cache_errors")

# In `payments --help` order.
PROCESSES: tuple[Process, ...] = (
    Process("migrate", COMMAND, "services.command.entrypoints.cli:migrate", ("postgres",)),
    Process("command-api", COMMAND, "services.command.entrypoints.cli:command_api", ("postgres", "temporal"),
            "command_api_port", 8001, api=True, verifies_tokens=True, metrics=_COMMANDS),
    Process("command-worker", COMMAND, "services.command.entrypoints.cli:command_worker", ("postgres", "temporal"),
            "command_worker_metrics_port", 9101, metrics=_COMMANDS),
    # Kafka may come later: the relay keeps the backlog meanwhile.
    Process("relay", COMMAND, "services.command.entrypoints.cli:relay", ("postgres",),
            "relay_metrics_port", 9102,
            metrics=("payments_outbox_backlog", "payments_outbox_publish_lag_seconds")),
    Process("intake", COMMAND, "services.command.entrypoints.cli:intake", ("postgres", "temporal", "kafka"),
            "intake_metrics_port", 9105, metrics=("payments_intake_messages", *_COMMANDS),
            group_field="intake_group"),
    Process("query-api", QUERY, "services.query.entrypoints.cli:query_api", ("mongo",),
            "query_api_port", 8002, api=True, verifies_tokens=True, metrics=_QUERIES),
    Process("projector", QUERY, "services.query.entrypoints.cli:projector", ("kafka", "mongo"),
            "projector_metrics_port", 9103,
            metrics=("payments_projection_events", "payments_projection_lag_seconds",
                     "payments_projection_dead_letters", "payments_projector_stalled",
                     "payments_projector_consecutive_failures", "payments_cache_errors"),
            group_field="projector_group"),
    Process("query-worker", QUERY, "services.query.entrypoints.cli:query_worker", ("mongo", "temporal"),
            "query_worker_metrics_port", 9104, metrics=_QUERIES),
    # Events to the organizations' webhook endpoints (a consumer and a Temporal worker).
    Process("webhooks", WEBHOOKS, "services.webhooks.entrypoints.cli:webhooks", ("postgres", "temporal", "kafka"),
            "webhooks_metrics_port", 9106,
            metrics=("payments_webhook_deliveries", "payments_webhook_attempt_duration_seconds",
                     "payments_webhook_backlog", "payments_webhook_oldest_pending_age_seconds",
                     "payments_webhook_endpoints_disabled"),
            group_field="webhooks_group"),
    # and Kafka or PostgreSQL, whichever it replays from (--from): it waits for that one itself
    Process("replay", QUERY, "services.query.entrypoints.cli:replay", ("mongo",)),
    # Pushes its gauges to a Pushgateway (it serves no port).
    Process("reconcile", TOOLS, "services.tools.reconcile_cli:reconcile", ("postgres", "mongo"),
            metrics=("payments_reconcile_drift", "payments_reconcile_last_run_timestamp_seconds")),
)
BY_NAME: dict[str, Process] = {p.name: p for p in PROCESSES}
#: The processes that keep running and serve a port (what `payments up` starts).
LONG_RUNNING: tuple[Process, ...] = tuple(p for p in PROCESSES if p.long_running)


def port_default(name: str) -> int:
    """The default port of process ``name`` (shared.settings.Settings reads it from here)."""
    port = BY_NAME[name].port_default
    if port is None:
        raise ValueError(f"{name} is a one-shot command: it has no port")
    return port
