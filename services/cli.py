"""The ``payments`` command: one entry point for every process and tool.

Every process comes from the process table (shared/processes.py); the tools and the query
side's ``dlq`` group register themselves. ``stack``, ``up`` and ``demo`` exist only where
the development tooling (the top-level ``devstack`` package) is installed: the production
image leaves it out.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

import typer
import typer.core

from services.query.entrypoints import cli as query_cli
from services.tools import cli as tools_cli
from shared.auth import uses_dev_secret
from shared.dependencies import DependencyUnavailable, wait_for
from shared.processes import BY_NAME, PROCESSES
from shared.settings import DEV_CONSISTENCY_TOKEN_SECRET, DEV_WEBHOOKS_SECRET_KEY, Settings, get_settings
from shared.telemetry import configure_logging, export_only
from shared.tracing_setup import TracingConfigError, start_tracing

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

def _loopback(host: str) -> bool:
    return host == "localhost" or host == "::1" or host.startswith("127.")


# The processes that hold webhook secrets and send to receivers' URLs.
WEBHOOK_PROCESSES = frozenset({"command-api", "webhooks"})


def _webhooks_refusal(settings: Settings) -> str | None:
    """Why a webhook process must not run so beyond loopback (None: it may)."""
    if _loopback(settings.host):
        return None
    if settings.webhooks_allow_private:
        return (f"listening on {settings.host} with PAYMENTS_WEBHOOKS_ALLOW_PRIVATE=true (webhooks to loopback and "
                "private addresses): that setting is for the local stack and tests only")
    if settings.webhooks_secret_key == DEV_WEBHOOKS_SECRET_KEY and not settings.allow_dev_jwt_secret:
        return (f"listening on {settings.host} with the built-in PAYMENTS_WEBHOOKS_SECRET_KEY (it encrypts the "
                "endpoints' signing secrets): set a key of your own, or PAYMENTS_ALLOW_DEV_JWT_SECRET=true to run "
                "so anyway")
    return None


@app.callback()
def _main(ctx: typer.Context) -> None:
    spec = BY_NAME.get(ctx.invoked_subcommand or "")
    if spec is None:
        return
    process = spec.name
    # Each long-running process exports only its own metrics (shared/telemetry.py).
    if spec.metrics:
        export_only(process)
    if "--help" not in sys.argv:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
        if spec.verifies_tokens and uses_dev_secret(settings) and not _loopback(settings.host):
            if not settings.allow_dev_jwt_secret:
                typer.secho(f"error: {process}: listening on {settings.host} with the built-in development JWT "
                            "secret (anyone can mint tokens): set PAYMENTS_JWT_JWKS_URL (your identity provider) "
                            "or PAYMENTS_JWT_SECRET, or PAYMENTS_ALLOW_DEV_JWT_SECRET=true to run so anyway",
                            fg="red", err=True)
                raise typer.Exit(1)
            logging.getLogger("payments.startup").warning(
                "the built-in development JWT secret is in use while listening on %s "
                "(PAYMENTS_ALLOW_DEV_JWT_SECRET=true): anyone can mint tokens", settings.host)
        if process in WEBHOOK_PROCESSES and (refused := _webhooks_refusal(settings)):
            typer.secho(f"error: {process}: {refused}", fg="red", err=True)
            raise typer.Exit(1)
        if settings.consistency_token_secret == DEV_CONSISTENCY_TOKEN_SECRET and not _loopback(settings.host):
            logging.getLogger("payments.startup").warning(
                "PAYMENTS_CONSISTENCY_TOKEN_SECRET is the built-in development secret while listening on %s: "
                "anyone can forge consistency tokens; set a secret of your own", settings.host)
        try:  # the OTEL_* variables (docs/operations.md, "Traces")
            start_tracing(process)
        except TracingConfigError as exc:
            typer.secho(f"error: {process}: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None
        try:
            asyncio.run(wait_for(settings, spec.needs, settings.startup_timeout_seconds))
        except DependencyUnavailable as exc:
            typer.secho(f"error: {process}: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None


def _entrypoint(target: str):  # noqa: ANN202 - a typer command function
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


tools_cli.register(app)
for _process in PROCESSES:
    _target = _entrypoint(_process.entrypoint)
    if isinstance(getattr(_target, "group", None), typer.Typer):  # a process with sub-commands (`webhooks`)
        app.add_typer(_target.group, name=_process.name)
    else:
        app.command(_process.name)(_target)
query_cli.register(app)  # the `dlq` group
# The development tooling, only where it is installed (the production image leaves it out).
try:
    from devstack import cli as devstack_cli
    from devstack import up as up_cli
except ModuleNotFoundError as missing:
    if missing.name != "devstack":
        raise
else:
    devstack_cli.register(app)
    up_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
