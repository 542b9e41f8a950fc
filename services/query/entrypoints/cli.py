"""Sub-commands of ``payments`` for the query side (registered by services/cli.py).

Thin entrypoints: read settings, configure logging, hand over to the module that runs
the process. Every process stops cleanly on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import typer

from shared.settings import Settings, get_settings
from shared.telemetry import configure_logging


def _settings(log_level: str | None) -> Settings:
    settings = get_settings()
    if log_level:
        settings = settings.model_copy(update={"log_level": log_level})
    configure_logging(settings.log_level, settings.log_json)
    return settings


LOG_LEVEL = typer.Option(None, "--log-level", help="Override PAYMENTS_LOG_LEVEL (DEBUG, INFO, WARNING).")


def query_api(
    host: str = typer.Option(None, "--host", help="Bind address (default: PAYMENTS_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port (default: PAYMENTS_QUERY_API_PORT, 8002)."),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes."),
    log_level: str = LOG_LEVEL,
) -> None:
    """Serve the query HTTP API: search, get by id (min_version), statistics; /docs, /metrics."""
    import uvicorn

    settings = _settings(log_level)
    uvicorn.run(
        "services.query.entrypoints.http.app:create_app", factory=True,
        host=host or settings.host, port=port or settings.query_api_port, workers=workers,
        log_config=None, access_log=False, timeout_graceful_shutdown=10,  # logs: our handler (JSON)
    )


def projector(
    batch_size: int = typer.Option(500, "--batch-size", help="Events per MongoDB transaction (at most)."),
    batch_wait: float = typer.Option(
        0.0, "--batch-wait", min=0, max=1,
        help="Seconds to wait for more events once a poll returned fewer than --batch-size (adds to latency; "
        "under a backlog batches fill without it).",
    ),
    group: str = typer.Option(None, "--group", help="Kafka consumer group (default: PAYMENTS_PROJECTOR_GROUP)."),
    fetch_max_wait_ms: int = typer.Option(
        None, "--fetch-max-wait-ms", min=1, max=30000,
        help="Longest a Kafka fetch waits for records (default: PAYMENTS_KAFKA_FETCH_MAX_WAIT_MS, 500); "
        "bounds projection latency only on brokers that do not answer a waiting fetch early (Tansu).",
    ),
    log_level: str = LOG_LEVEL,
) -> None:
    """Project payment events from Kafka into the MongoDB read model.

    Invalid events go to the dead-letter topic; offsets are committed only after the
    read model is written. Ops endpoints on PAYMENTS_PROJECTOR_METRICS_PORT (9103).
    """
    from services.query.entrypoints.projector import run_projector

    asyncio.run(run_projector(_settings(log_level), group=group, batch_size=batch_size, batch_wait=batch_wait,
                              fetch_max_wait_ms=fetch_max_wait_ms))


def query_worker(
    max_concurrent: int = typer.Option(200, "--max-concurrent", help="Concurrent activities and workflow tasks."),
    log_level: str = LOG_LEVEL,
) -> None:
    """Run the Temporal worker of the query workflows (search, get, statistics) on task queue
    payments-queries.

    Ops endpoints on PAYMENTS_QUERY_WORKER_METRICS_PORT (9104).
    """
    from services.query.entrypoints.query_worker import run_query_worker

    asyncio.run(run_query_worker(_settings(log_level), max_concurrent=max_concurrent))


class ReplaySource(StrEnum):  # the values name servers of shared/dependencies.py too
    KAFKA = "kafka"
    POSTGRES = "postgres"


def replay(
    source: ReplaySource = typer.Option(ReplaySource.KAFKA, "--from", help=(
        "Where the events come from: the events topic (it must still hold every event), or PostgreSQL's "
        "event log (every event ever committed, whatever the topic's retention)")),
    idle: float = typer.Option(None, "--idle", help="Also stop after this many seconds without new events: only "
                               "for a broker whose end offsets are wrong (Tansu). By default it reads to the end "
                               "offsets seen at its start."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Events per MongoDB transaction."),
    keep_old: bool = typer.Option(False, "--keep-old", help="Keep the previous generation's collections."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    log_level: str = LOG_LEVEL,
) -> None:
    """Rebuild the read model, statistics and history from the events topic (from offset 0)
    or from PostgreSQL's event log (--from postgres).

    Builds into a fresh generation of collections while queries keep using the current
    one, then switches the pointer atomically and catches up once more. Run it while
    the projector runs or not: both are idempotent.
    """
    from services.query.entrypoints.replay import run_replay
    from shared.dependencies import DependencyUnavailable, wait_for

    settings = _settings(log_level)
    try:  # the source's server (the process table's `needs` are those of every run: MongoDB)
        asyncio.run(wait_for(settings, (source.value,), settings.startup_timeout_seconds))
    except DependencyUnavailable as exc:
        typer.secho(f"error: replay: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    summary = asyncio.run(run_replay(settings, source=source.value, idle=idle, batch_size=batch_size,
                                     keep_old=keep_old, progress=progress))
    typer.echo(summary)


def register(app: typer.Typer) -> None:
    """Add ``payments dlq`` to the ``payments`` app (the processes above are registered
    from the process table, shared/processes.py)."""
    from services.query.entrypoints.dlq_cli import app as dlq_app

    app.add_typer(dlq_app, name="dlq")
