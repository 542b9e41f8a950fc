"""Sub-commands of ``payments`` for the command side (registered by services/cli.py):
``migrate``, ``command-api``, ``command-worker``, ``relay`` and ``intake``. Each reads its
configuration from ``PAYMENTS_*`` variables (see services/command/config.py and
shared/settings.py) and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio

import typer

from services.command.config import CommandSettings
from shared.telemetry import configure_logging


def _settings(**overrides: object) -> CommandSettings:
    settings = CommandSettings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, settings.log_json)
    return settings


def migrate() -> None:
    """Apply the command service's PostgreSQL migrations (idempotent).

    Safe to run from several processes at once (advisory lock). Uses PAYMENTS_DATABASE_URL.
    """
    from services.command.adapters.store import create_pool
    from services.command.adapters.store import migrate as apply

    settings = _settings()

    async def run() -> list[str]:
        pool = await create_pool(settings.database_url, size=1)
        try:
            return await apply(pool)
        finally:
            await pool.close()

    applied = asyncio.run(run())
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database schema is up to date")


def command_api(
    port: int = typer.Option(None, "--port", help="Listen port (default PAYMENTS_COMMAND_API_PORT, 8001)."),
    host: str = typer.Option(None, "--host", help="Listen address (default PAYMENTS_HOST)."),
    embedded_worker: bool = typer.Option(
        None, "--embedded-worker/--no-embedded-worker",
        help="Host a command worker in the API process, enabling eager workflow start "
        "(default PAYMENTS_COMMAND_API_EMBEDDED_WORKER, true).",
    ),
) -> None:
    """Serve the command HTTP API (port 8001) with uvicorn.

    Runs the migrations at start-up, serves /healthz, /readyz, /metrics, /docs; by
    default hosts a command worker for eager workflow start. Stops cleanly on SIGTERM.
    """
    import uvicorn

    from services.command.entrypoints.http.app import create_app

    settings = _settings(command_api_port=port, host=host, command_api_embedded_worker=embedded_worker)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.command_api_port,
                log_config=None, access_log=False, timeout_graceful_shutdown=15)


def command_worker() -> None:
    """Run the Temporal command worker (task queue payments-commands).

    /healthz, /readyz and /metrics on PAYMENTS_COMMAND_WORKER_METRICS_PORT (9101).
    Stops cleanly on SIGTERM (finishes in-flight tasks, up to 10 s).
    """
    from services.command.entrypoints.command_worker import run_worker

    asyncio.run(run_worker(_settings()))


def relay() -> None:
    """Publish the outbox to Kafka: at least once, in order per payment.

    Several replicas may run. /healthz, /readyz and /metrics on PAYMENTS_RELAY_METRICS_PORT
    (9102); published rows stay in the outbox, the permanent event log.
    """
    from services.command.entrypoints.relay import run_relay

    asyncio.run(run_relay(_settings()))


def intake() -> None:
    """Run Kafka producers' commands (topic payments.commands) through the command service.

    One result per command on PAYMENTS_COMMAND_RESULTS_TOPIC, malformed messages on
    PAYMENTS_COMMANDS_DLQ_TOPIC (reason in headers). Several replicas may run (consumer
    group PAYMENTS_INTAKE_GROUP). /healthz, /readyz and /metrics on
    PAYMENTS_INTAKE_METRICS_PORT (9105). Stops cleanly on SIGTERM.
    """
    from services.command.entrypoints.intake import run_intake

    asyncio.run(run_intake(_settings()))

