"""The processes of payments-cqs, started as child processes (``payments up``, the tests
that run the whole system, the benchmarks).

Which processes there are, and the port that serves each one's ``/healthz``, ``/readyz``
and ``/metrics``, is the process table's (shared/processes.py).
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
from shared.processes import LONG_RUNNING, Process
from shared.settings import Settings


def port_of(process: Process, settings: Settings) -> int:
    return int(getattr(settings, process.port_setting))


def base_url(process: Process, settings: Settings) -> str:
    """Where the process answers: its API, or the ops endpoint of a worker."""
    return f"http://{settings.host}:{port_of(process, settings)}"


GROUP_INSTANCE_ID_ENV = "PAYMENTS_KAFKA_GROUP_INSTANCE_ID"


def member_env(process: Process, slot: int = 0) -> dict[str, str]:
    """The static Kafka group instance id of ``process`` in replica slot ``slot`` (none for a
    process that joins no consumer group), for a broker that needs one
    (``LocalStack.static_members``: noida-db, which never expires a vanished member, so a
    killed process started again in its slot takes its partitions back instead of never).
    Give it only to a replica that comes back: a static member that stops for good does not
    leave its group (aiokafka sends no LeaveGroup for it), so an extra replica runs without
    one and leaves on SIGTERM. On Apache Kafka every process is a dynamic member, as in
    production."""
    return {GROUP_INSTANCE_ID_ENV: f"{process.name}-{slot}"} if process.group_field else {}


def isolated(base: Settings, name: str, **overrides: Any) -> tuple[Settings, dict[str, str]]:
    """Settings (and the child environment) for a system that shares ``base``'s servers but
    none of its data: its own MongoDB database, Kafka topics and consumer groups, task
    queues and free ports."""
    suffix = f"{name}-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        **{p.group_field: f"payments-{p.name}-{suffix}" for p in LONG_RUNNING if p.group_field},
        "mongo_db": suffix.replace("-", "_"),
        "events_topic": f"payments.events.{suffix}",
        "dlq_topic": f"payments.events.dlq.{suffix}",
        "commands_topic": f"payments.commands.{suffix}",
        "command_results_topic": f"payments.command-results.{suffix}",
        "commands_dlq_topic": f"payments.commands.dlq.{suffix}",
        "command_task_queue": f"payments-commands-{suffix}",
        "query_task_queue": f"payments-queries-{suffix}",
        "webhooks_task_queue": f"payments-webhooks-{suffix}",
        **{p.port_setting: free_port() for p in LONG_RUNNING},
        **overrides,
    }
    env = {**os.environ, **{f"PAYMENTS_{k.upper()}": str(v) for k, v in values.items()}}
    # intake_group is the command side's (CommandSettings): its child reads it from env.
    return base.model_copy(update={k: v for k, v in values.items() if k in Settings.model_fields}), env


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
    #: give each consumer its slot-0 static group instance id (``LocalStack.static_members``)
    static_members: bool = False
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, env: dict[str, str], *, timeout: float = 60.0, names: list[str] | None = None,
              wait: bool = True) -> None:
        """Start the processes (all by default) and wait until each answers ``/readyz``
        (or, with ``wait=False``, only until each answers ``/healthz``). Each is slot 0 of
        its kind: with ``static_members`` a consumer gets its static group instance id
        (``member_env``) unless ``env`` names one."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        specs = [p for p in LONG_RUNNING if names is None or p.name in names]
        for spec in specs:
            log = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.children[spec.name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", spec.name],
                env={**(member_env(spec) if self.static_members else {}), **env}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
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
                if _healthy(base_url(spec, self.settings) + ("/readyz" if wait else "/healthz")):
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
