"""The ``payments`` command: one entry point for every process and tool.

Each area registers its own sub-commands, so this file stays a table of contents.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import typer
import typer.core

from devstack import cli as devstack_cli
from devstack import up as up_cli
from services.command import cli as command_cli
from services.query import cli as query_cli
from services.tools import cli as tools_cli
from services.tools import reconcile_cli
from shared.auth import uses_dev_secret
from shared.dependencies import PROCESS_NEEDS, DependencyUnavailable, wait_for
from shared.settings import DEV_CONSISTENCY_TOKEN_SECRET, get_settings
from shared.telemetry import PROCESS_METRICS, configure_logging, export_only

# typer >= 0.29 shows a flag's type ("<bool>") in --help as if it took a value: show none.
_display_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = (  # type: ignore[method-assign]
    lambda self, ctx: None if self.is_flag else _display_type(self, ctx))

app = typer.Typer(
    name="payments",
    help="payments-cqs: command and query services, local stack and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The processes that verify tokens (and sign cursors) with the configured keys.
TOKEN_VERIFIERS = ("command-api", "query-api")


def _loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


@app.callback()
def _main(ctx: typer.Context) -> None:
    process = ctx.invoked_subcommand
    # Each long-running process exports only its own metrics (shared/telemetry.py).
    if process in PROCESS_METRICS:
        export_only(process)
    if process in PROCESS_NEEDS and "--help" not in sys.argv:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
        if process in TOKEN_VERIFIERS and uses_dev_secret(settings) and not _loopback(settings.host):
            if not settings.allow_dev_jwt_secret:
                typer.secho(f"error: {process}: listening on {settings.host} with the built-in development JWT "
                            "secret (anyone can mint tokens): set PAYMENTS_JWT_JWKS_URL (your identity provider) "
                            "or PAYMENTS_JWT_SECRET, or PAYMENTS_ALLOW_DEV_JWT_SECRET=true to run so anyway",
                            fg="red", err=True)
                raise typer.Exit(1)
            logging.getLogger("payments.startup").warning(
                "the built-in development JWT secret is in use while listening on %s "
                "(PAYMENTS_ALLOW_DEV_JWT_SECRET=true): anyone can mint tokens", settings.host)
        if settings.consistency_token_secret == DEV_CONSISTENCY_TOKEN_SECRET and not _loopback(settings.host):
            logging.getLogger("payments.startup").warning(
                "PAYMENTS_CONSISTENCY_TOKEN_SECRET is the built-in development secret while listening on %s: "
                "anyone can forge consistency tokens; set a secret of your own", settings.host)
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
