"""The ``payments`` command: one entry point for every process and tool.

Each area registers its own sub-commands, so this file stays a table of contents.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import typer

from services import devstack_cli, reconcile_cli, tools_cli, up_cli
from services.command import cli as command_cli
from services.query import cli as query_cli
from shared.dependencies import PROCESS_NEEDS, DependencyUnavailable, wait_for
from shared.settings import DEV_CONSISTENCY_TOKEN_SECRET, DEV_JWT_SECRET, get_settings
from shared.telemetry import PROCESS_METRICS, configure_logging, export_only

app = typer.Typer(
    name="payments",
    help="payments-cqs: command and query services, local stack and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    process = ctx.invoked_subcommand
    # Each long-running process exports only its own metrics (shared/telemetry.py).
    if process in PROCESS_METRICS:
        export_only(process)
    if process in PROCESS_NEEDS and "--help" not in sys.argv:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
        for field, dev_value, risk in (("jwt_secret", DEV_JWT_SECRET, "mint tokens"),
                                       ("consistency_token_secret", DEV_CONSISTENCY_TOKEN_SECRET,
                                        "forge consistency tokens")):
            if getattr(settings, field) == dev_value and not settings.host.startswith("127."):
                logging.getLogger("payments.startup").warning(
                    "PAYMENTS_%s is the built-in development secret while listening on %s: "
                    "anyone can %s; set a secret of your own", field.upper(), settings.host, risk)
        try:
            asyncio.run(wait_for(settings, PROCESS_NEEDS[process], settings.startup_timeout_seconds))
        except DependencyUnavailable as exc:
            typer.secho(f"error: {process}: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None


tools_cli.register(app)
devstack_cli.register(app)
command_cli.register(app)
query_cli.register(app)
up_cli.register(app)
reconcile_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
