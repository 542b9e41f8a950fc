"""Container health check: GET /healthz on the port of the process this container runs.

The image runs one ``payments`` sub-command per container (``payments command-api``,
``payments relay``, ...). This script reads PID 1's command line to learn which one,
takes that process's port from its ``PAYMENTS_*_PORT`` variable (or its default), both
from the process table (shared/processes.py), and asks ``http://127.0.0.1:<port>/healthz``.
Exit 0 when it answers 200, 1 otherwise. One-shot commands (``migrate``, ``replay``,
``reconcile``) have no server: they are reported healthy while they run.

shared/processes.py is standard library only (and ``shared/__init__.py`` is empty), so
a health check never imports the application's heavy dependencies (FastAPI, Temporal,
Kafka and database clients): it stays fast and cannot fail on them.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from shared.processes import LONG_RUNNING, port_default

SERVED = {p.name: p for p in LONG_RUNNING}


def process_name(cmdline: list[str]) -> str | None:
    """The ``payments`` sub-command in a command line, if it is one that serves a port."""
    for arg in cmdline:
        if arg in SERVED:
            return arg
    return None


def main() -> int:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        raw = b""
    cmdline = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    name = process_name(cmdline)
    if name is None:
        return 0  # a one-shot command, a shell: nothing listens
    port = int(os.environ.get(SERVED[name].port_env, port_default(name)))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"healthcheck {name} :{port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
