"""Logging and Prometheus metrics (DESIGN section 8), defined once for every process. Log
lines carry the current span's ``trace_id`` / ``span_id`` (shared/tracing.py).

Metric names are a contract with the dashboards and alerts in deploy/: define them
here, nowhere else.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

from shared.processes import PROCESSES
from shared.tracing import log_ids

# `_created` series double every counter for no dashboard we have.
disable_created_metrics()

COMMANDS = Counter(
    "payments_commands", "Payment commands handled, by type and outcome", ["type", "outcome"]
)
COMMAND_DURATION = Histogram(
    "payments_command_duration_seconds", "Command latency from request to result", ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_BACKLOG = Gauge("payments_outbox_backlog", "Outbox rows not yet published to Kafka")
OUTBOX_PUBLISH_LAG = Gauge(
    "payments_outbox_publish_lag_seconds",
    "Age of the oldest unpublished outbox row (0 when the backlog is empty)",
)
PROJECTION_EVENTS = Counter(
    "payments_projection_events", "Events seen by the projector", ["type", "result"]
)
PROJECTION_LAG = Gauge(
    "payments_projection_lag_seconds", "Time between an event's time and its projection"
)
PROJECTION_DEAD_LETTERS = Counter(
    "payments_projection_dead_letters",
    "Events the projector sent to the dead-letter topic, by reason (invalid, refused, error)", ["reason"],
)
PROJECTOR_STALLED = Gauge(
    "payments_projector_stalled", "1 while the projector has failed to progress for its stall threshold"
)
PROJECTOR_CONSECUTIVE_FAILURES = Gauge(
    "payments_projector_consecutive_failures", "Failed attempts at the current batch (0 when progressing)"
)
QUERIES = Counter("payments_queries", "Queries served, by kind and cache result", ["kind", "cache"])
QUERY_DURATION = Histogram(
    "payments_query_duration_seconds", "Query handler latency", ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
CACHE_ERRORS = Counter("payments_cache_errors", "Redis errors that degraded a query to MongoDB")
INTAKE_MESSAGES = Counter(
    "payments_intake_messages", "Command messages read by the intake, by command type and result "
    "(succeeded|rejected|dead_lettered)", ["type", "result"]
)
WEBHOOK_DELIVERIES = Counter("payments_webhook_deliveries", "Webhook delivery attempts by outcome "
                             "(succeeded|retry|given_up)", ["outcome"])
WEBHOOK_ATTEMPT_SECONDS = Histogram("payments_webhook_attempt_duration_seconds", "Duration of one webhook POST",
                                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WEBHOOK_BACKLOG = Gauge("payments_webhook_backlog", "Pending webhook deliveries per endpoint", ["endpoint"])
WEBHOOK_OLDEST_PENDING = Gauge("payments_webhook_oldest_pending_age_seconds",
                               "Age of the oldest pending webhook delivery (0 when none)")
WEBHOOK_ENDPOINTS_DISABLED = Counter("payments_webhook_endpoints_disabled",
                                     "Webhook endpoints disabled after failing continuously")

RECONCILE_DRIFT = Gauge(
    "payments_reconcile_drift", "Differences found by the last `payments reconcile` run, by kind "
    "(missing|extra|stale|buckets|history_missing|history_extra|history_stale), before any repair", ["kind"]
)
RECONCILE_LAST_RUN = Gauge("payments_reconcile_last_run_timestamp_seconds", "When `payments reconcile` last finished")

# Which process exports which metric: the process table names them (shared/processes.py).
# A process only exports its own, so a relay's backlog gauge is never diluted by zeros
# from processes that have no outbox.
ALL_METRICS = tuple(m for m in globals().values() if isinstance(m, MetricWrapperBase))
_BY_NAME = {m.describe()[0].name: m for m in ALL_METRICS}
PROCESS_METRICS = {p.name: tuple(_BY_NAME[n] for n in p.metrics) for p in PROCESSES if p.metrics}


def export_only(process: str) -> None:
    """Unregister the metrics that ``process`` does not own (called once at process start).

    In-process tests never call it and see every metric.
    """
    own = {id(m) for m in PROCESS_METRICS.get(process, ())}
    for metric in ALL_METRICS:
        if id(metric) not in own:
            try:
                REGISTRY.unregister(metric)
            except KeyError:
                pass


# Correlation ids carried into every log line of the current task.
log_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)


def bind_log_context(**fields: Any) -> contextvars.Token:
    current = dict(log_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    return log_context.set(current)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(log_context.get() or {})
        entry.update(log_ids())  # trace_id, span_id: the line's place in its trace
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = {**(log_context.get() or {}), **log_ids()}
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            ctx.update(extra)
        if ctx:
            base += " " + " ".join(f"{k}={v}" for k, v in ctx.items())
        return base


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "temporalio.worker._workflow_instance"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
