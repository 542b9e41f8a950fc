"""The lines `payments up` prints work when pasted into a shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack.up import try_lines


def test_pasted_lines_send_the_token_and_name_this_venvs_payments() -> None:
    export, curl, demo = try_lines("http://127.0.0.1:8001", "aaa.bbb.ccc")
    # A shell function stands in for curl: it prints the arguments the shell gave it.
    script = f"curl() {{ printf '%s\\n' \"$@\"; }}\n{export}\n{curl}\n"
    args = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "Authorization: Bearer aaa.bbb.ccc" in args
    assert '{"amount": 1250, "currency": "EUR"}' in args and args[-1] == "http://127.0.0.1:8001/v1/payments"
    assert demo.startswith(f"or: {Path(sys.executable).parent / 'payments'} demo")
