"""The seven processes of payments-cqs, started as child processes (``payments up``).

One table says what each process is, which port serves its ``/healthz``, ``/readyz``
and ``/metrics``, and which URLs a person wants to see. ``payments up`` and the tests
that scrape every process's metrics both use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.net import free_port
from shared.settings import Settings


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # the `payments` sub-command
    port_field: str  # Settings field holding the port of its HTTP/ops endpoint
    is_api: bool = False

    def port(self, settings: Settings) -> int:
        return int(getattr(settings, self.port_field))

    def base_url(self, settings: Settings) -> str:
        return f"http://{settings.host}:{self.port(settings)}"


PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec("command-api", "command_api_port", is_api=True),
    ProcessSpec("command-worker", "command_worker_metrics_port"),
    ProcessSpec("relay", "relay_metrics_port"),
    ProcessSpec("query-api", "query_api_port", is_api=True),
    ProcessSpec("projector", "projector_metrics_port"),
    ProcessSpec("query-worker", "query_worker_metrics_port"),
    ProcessSpec("intake", "intake_metrics_port"),
)


def isolated(base: Settings, name: str, **overrides: Any) -> tuple[Settings, dict[str, str]]:
    """Settings (and the child environment) for a system that shares ``base``'s servers but
    none of its data: its own MongoDB database, Kafka topics, task queues and free ports."""
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "mongo_db": suffix.replace("-", "_"),
        "events_topic": f"payments.events.{suffix}",
        "dlq_topic": f"payments.events.dlq.{suffix}",
        "commands_topic": f"payments.commands.{suffix}",
        "command_results_topic": f"payments.command-results.{suffix}",
        "commands_dlq_topic": f"payments.commands.dlq.{suffix}",
        "command_task_queue": f"payments-commands-{suffix}",
        "query_task_queue": f"payments-queries-{suffix}",
        **{spec.port_field: free_port() for spec in PROCESSES},
        **overrides,
    }
    env = {**os.environ, **{f"PAYMENTS_{k.upper()}": str(v) for k, v in values.items()}}
    return base.model_copy(update=values), env


class ProcessStartError(RuntimeError):
    """A process failed to start; the message says which and shows its log tail."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class RunningSystem:
    settings: Settings
    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, env: dict[str, str], *, timeout: float = 60.0, names: list[str] | None = None,
              wait: bool = True) -> None:
        """Start the processes (all by default) and wait until each answers ``/readyz``
        (or, with ``wait=False``, only until each answers ``/healthz``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        specs = [p for p in PROCESSES if names is None or p.name in names]
        for spec in specs:
            log = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.children[spec.name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", spec.name],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pending = {s.name: s for s in specs}
        while pending:
            for name, spec in list(pending.items()):
                child = self.children[name]
                if child.poll() is not None:
                    self.stop()
                    raise ProcessStartError(
                        f"{name} exited with code {child.returncode}; last log lines:\n"
                        + _tail(self.log_dir / f"{name}.log")
                    )
                if _healthy(spec.base_url(self.settings) + ("/readyz" if wait else "/healthz")):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                self.stop()
                raise ProcessStartError(
                    f"not ready after {timeout:.0f}s: {', '.join(pending)}; see logs in {self.log_dir}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0, *, names: list[str] | None = None) -> None:
        """SIGTERM the processes (all by default), SIGKILL those still there after ``timeout``."""
        chosen = {n: c for n, c in self.children.items() if names is None or n in names}
        for child in chosen.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, child in chosen.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            del self.children[name]
