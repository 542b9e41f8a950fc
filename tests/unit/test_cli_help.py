"""--help of every command: flags show no value type (they take none)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli import app

# Tools only: a process command waits for its servers unless "--help" is in sys.argv.
COMMANDS = ["up", "demo", "stack up", "stack down", "token", "schema", "settings"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_flags_do_not_look_like_they_take_a_value(command: str) -> None:
    result = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "--help" in result.output
