"""Container health check: GET /healthz on the port of the process this container runs.

The image runs one ``payments`` sub-command per container (``payments command-api``,
``payments relay``, ...). This script reads PID 1's command line to learn which one,
takes that process's port from its ``PAYMENTS_*_PORT`` variable (or the default of
``shared.settings.Settings``) and asks ``http://127.0.0.1:<port>/healthz``.
Exit 0 when it answers 200, 1 otherwise. One-shot commands (``migrate``, ``replay``)
have no server: they are reported healthy while they run.

Standard library only, so a health check never imports the application.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

# sub-command -> (environment variable with its port, default port)
PORTS: dict[str, tuple[str, int]] = {
    "command-api": ("PAYMENTS_COMMAND_API_PORT", 8001),
    "query-api": ("PAYMENTS_QUERY_API_PORT", 8002),
    "command-worker": ("PAYMENTS_COMMAND_WORKER_METRICS_PORT", 9101),
    "relay": ("PAYMENTS_RELAY_METRICS_PORT", 9102),
    "projector": ("PAYMENTS_PROJECTOR_METRICS_PORT", 9103),
    "query-worker": ("PAYMENTS_QUERY_WORKER_METRICS_PORT", 9104),
    "intake": ("PAYMENTS_INTAKE_METRICS_PORT", 9105),
}


def process_name(cmdline: list[str]) -> str | None:
    """The ``payments`` sub-command in a command line, if it is one we serve."""
    for arg in cmdline:
        if arg in PORTS:
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
        return 0  # migrate, replay, a shell: nothing listens
    env_var, default = PORTS[name]
    port = int(os.environ.get(env_var, default))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"healthcheck {name} :{port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
