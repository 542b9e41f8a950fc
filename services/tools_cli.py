"""Sub-commands of ``payments`` (registered by services/cli.py)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``payments`` app."""
