"""The ``payments`` command: one entry point for every process and tool.

Each area registers its own sub-commands, so this file stays a table of contents.
"""

from __future__ import annotations

import typer

from services import devstack_cli, tools_cli, up_cli
from services.command import cli as command_cli
from services.query import cli as query_cli
from shared.telemetry import PROCESS_METRICS, export_only

app = typer.Typer(
    name="payments",
    help="payments-cqs: command and query services, local stack and tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    # Each long-running process exports only its own metrics (shared/telemetry.py).
    if ctx.invoked_subcommand in PROCESS_METRICS:
        export_only(ctx.invoked_subcommand)


tools_cli.register(app)
devstack_cli.register(app)
command_cli.register(app)
query_cli.register(app)
up_cli.register(app)

if __name__ == "__main__":  # pragma: no cover
    app()
