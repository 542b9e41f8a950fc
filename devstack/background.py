"""The stack recorded in ``<data_dir>/stack.json``, seen from another process:
``start_background`` (``payments stack up --detach``), ``stop_background`` (``payments
stack down``), ``status`` (``payments stack status``) and the server actions
(``payments stack start|stop|restart NAME``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .endpoints import DEFAULT_DATA_DIR, HOST, SERVICES, STACK_FILE_NAME, StackError, read_stack_file, redact
from .pids_and_ports import group_alive, kill_group, pid_alive, pid_cmdline, tcp_answers, terminate_pids


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    alive: bool | None  # None: not started by the stack (external)
    address: str
    answering: bool


@dataclass
class StackStatus:
    data_dir: Path
    running: bool
    started_at: str | None = None
    owner_pid: int | None = None
    services: list[ServiceStatus] = field(default_factory=list)



def start_background(data_dir: Path, args: list[str], timeout: float) -> tuple[int, dict[str, Any]]:
    """Run ``python -m devstack.cli stack up --data-dir DATA_DIR ARGS`` in its own session,
    logging to ``<data_dir>/logs/stack.log``; return its pid and its stack.json once it
    has written it. StackError (one line) if a stack already runs there, if the child
    exits (its last error line), or after ``timeout`` seconds (the child is stopped)."""
    if status(data_dir).running:
        raise StackError(
            f"a stack is already running in {data_dir}; see 'payments stack status --data-dir {data_dir}' "
            f"or stop it with 'payments stack down --data-dir {data_dir}'")
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "stack.log"
    # Our own package must be importable from the child, wherever it is started from.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "stack", "up", "--data-dir", str(data_dir), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=env,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise StackError(f"{_last_error_line(log_path)} (log: {log_path})")
        data = read_stack_file(data_dir)
        if data and data.get("owner_pid") == child.pid:
            return child.pid, data
        time.sleep(0.1)
    kill_group(child.pid, signal.SIGTERM)
    try:
        child.wait(20)
    except subprocess.TimeoutExpired:
        kill_group(child.pid, signal.SIGKILL)
    raise StackError(f"the stack did not become ready within {timeout:.0f}s (log: {log_path})")


def _last_error_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "the background stack exited"
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return "the background stack exited: " + (" | ".join(lines[-3:]) if lines else "(no output)")


def stop_background(
    data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR, timeout: float = 20.0
) -> list[str]:
    """Stop the stack recorded in ``<data_dir>/stack.json`` (``payments stack down``).

    Asks the process that owns the stack to stop (it stops its children and removes
    stack.json), then kills whatever is still alive. Returns the names of the servers
    that were running; empty when there was no stack.
    """
    data_dir = Path(data_dir)
    data = read_stack_file(data_dir)
    if data is None:
        return []
    pids: dict[str, int] = {n: int(p) for n, p in (data.get("pids") or {}).items()}
    # Only signal pids that still run the program we started (pids get reused).
    expected = {
        "temporal": ("temporal",),
        "kafka": ("noida-db", "tansu", "kafka.Kafka"),
        "mongo": ("secantus",),
        "postgres": ("postgres",),
        "redis": ("valkey",),
    }
    pids = {
        n: p
        for n, p in pids.items()
        if pid_alive(p) and any(word in pid_cmdline(p) for word in expected.get(n, (n,)))
    }
    running = sorted(pids)
    owner = data.get("owner_pid")
    deadline = time.monotonic() + timeout
    if owner and owner != os.getpid() and pid_alive(owner):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(owner), signal.SIGTERM)
        while time.monotonic() < deadline and pid_alive(owner):
            time.sleep(0.05)
        if pid_alive(owner):
            kill_group(int(owner), signal.SIGKILL)
    leftover = {n: p for n, p in pids.items() if pid_alive(p) or group_alive(p)}
    if leftover:
        first = {"postgres": signal.SIGINT}
        terminate_pids(leftover, first, max(1.0, deadline - time.monotonic()))
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STACK_FILE_NAME).unlink()
    shutil.rmtree(data_dir / "run", ignore_errors=True)
    return running


def _address_of(name: str, settings: Mapping[str, Any]) -> tuple[str, str, int | None]:
    """(display address, host, port) of a service from stack.json settings."""
    raw = {
        "temporal": settings.get("temporal_address"),
        "temporal_ui": settings.get("temporal_ui_url"),
        "kafka": settings.get("kafka_bootstrap"),
        "mongo": settings.get("mongo_url"),
        "postgres": settings.get("database_url"),
        "redis": settings.get("redis_url"),
    }.get(name)
    if not raw:
        return "", "", None
    text = str(raw)
    first = text.split(",")[0]
    parts = urlsplit(first if "://" in first else f"tcp://{first}")
    try:
        return redact(text), parts.hostname or HOST, parts.port
    except ValueError:
        return redact(text), parts.hostname or HOST, None


def status(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> StackStatus:
    """What the stack in data_dir runs: per server, whether its pid is alive and its
    port answers."""
    data_dir = Path(data_dir)
    data = read_stack_file(data_dir)
    if data is None:
        return StackStatus(data_dir=data_dir, running=False)
    settings = data.get("settings") or {}
    pids = data.get("pids") or {}
    services: list[ServiceStatus] = []
    names = list(SERVICES)
    if settings.get("temporal_ui_url"):
        names.insert(1, "temporal_ui")
    for name in names:
        address, host, port = _address_of(name, settings)
        pid = pids.get("temporal" if name == "temporal_ui" else name)
        services.append(
            ServiceStatus(
                name=name,
                pid=pid,
                alive=pid_alive(pid) if pid else None,
                address=address,
                answering=bool(port) and tcp_answers(host, int(port)),
            )
        )
    owner = data.get("owner_pid")
    running = any(s.alive or (s.alive is None and s.answering) for s in services)
    return StackStatus(
        data_dir=data_dir,
        running=running,
        started_at=data.get("started_at"),
        owner_pid=owner if pid_alive(owner) else None,
        services=services,
    )



#: ``payments stack start|stop|restart NAME`` asks the stack's owner process through a
#: file ``<data_dir>/control/<name>`` holding the action; the owner answers in
#: ``<name>.done`` ("ok" or the error). Only the owner can respawn its children.
CONTROL_DIR = "control"
SERVER_ACTIONS = ("start", "stop", "restart")


def request_server_action(data_dir: str | os.PathLike[str], name: str, action: str,
                          timeout: float = 60.0) -> str:
    """Ask the running stack in ``data_dir`` to ``action`` server ``name``; returns
    "ok" or the owner's error message."""
    data_dir = Path(data_dir)
    data = read_stack_file(data_dir)
    if data is None or not pid_alive(data.get("owner_pid")):
        return f"no stack running in {data_dir}"
    if name not in (data.get("pids") or {}):
        return f"{name} is not a server this stack started (started: {', '.join(sorted(data.get('pids') or {}))})"
    control = data_dir / CONTROL_DIR
    control.mkdir(exist_ok=True)
    done = control / f"{name}.done"
    done.unlink(missing_ok=True)
    (control / name).write_text(action)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done.exists():
            answer = done.read_text().strip()
            done.unlink(missing_ok=True)
            return answer
        time.sleep(0.1)
    return f"the stack did not {action} {name} within {timeout:.0f}s (see {data_dir / 'logs'})"


def pending_server_actions(data_dir: Path) -> list[tuple[str, str]]:
    """(name, action) requests waiting for the owner; each is taken (its file removed)."""
    control = data_dir / CONTROL_DIR
    found: list[tuple[str, str]] = []
    for path in sorted(control.glob("*")) if control.is_dir() else []:
        if path.suffix == ".done":
            continue
        with contextlib.suppress(OSError):
            found.append((path.name, path.read_text().strip()))
            path.unlink()
    return found


def answer_server_action(data_dir: Path, name: str, answer: str) -> None:
    (data_dir / CONTROL_DIR / f"{name}.done").write_text(answer)
