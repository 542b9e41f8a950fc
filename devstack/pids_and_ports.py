"""The host side of the local stack: pid and process-group checks and signals,
free/answering TCP ports and picking them, die-with-parent for children, and one-line
log excerpts."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .endpoints import HOST, StackError

MONGO_MAX_PORT = 32767  # SecantusDB needs a port below 32768


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        data = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    kept = [one_line(line, 200) for line in data.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when the process that started it
    dies (Linux prctl PR_SET_PDEATHSIG), so a crashed or SIGKILLed owner leaves no
    server behind. None where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return preexec


#: ``die_with_parent()``, made once at import.
PREEXEC_DIE_WITH_PARENT = die_with_parent()


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(wanted: list[str], fixed: Mapping[str, int]) -> dict[str, int]:
    """A port for each server in ``wanted``: its fixed one (checked free) or a free one."""
    ports: dict[str, int] = {}
    for name in wanted:
        port = fixed.get(name)
        if port is not None:
            if name == "mongo" and port > MONGO_MAX_PORT:
                raise StackError(f"MongoDB (SecantusDB) needs a port below 32768, got {port}; choose a lower one")
            if not port_is_free(port):
                raise StackError(f"port {port} for {name} is already in use on {HOST}; stop what uses it, "
                                 "choose another port, or leave it unset to pick a free one")
            ports[name] = port
    held: list[socket.socket] = []  # held open until all are picked, so that none is picked twice
    try:
        for name in wanted:
            if name not in ports:
                s = _grab_free_port(set(ports.values()), mongo=(name == "mongo"))
                held.append(s)
                ports[name] = s.getsockname()[1]
    finally:
        for s in held:
            s.close()
    return ports


def _grab_free_port(taken: set[int], mongo: bool) -> socket.socket:
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Ports from the kernel's ephemeral range (>= 32768) are fine except for
            # SecantusDB, which needs one below 32768.
            s.bind((HOST, random.randint(20000, MONGO_MAX_PORT) if mongo else 0))
        except OSError:
            s.close()
            continue
        if s.getsockname()[1] in taken:
            s.close()
            continue
        return s
    raise StackError("could not find a free port on 127.0.0.1; free some ports and retry")


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def kill_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (children are started with
    start_new_session=True, so pgid == pid), falling back to the process itself."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # killpg(0) also succeeds for a group made only of zombies; look closer.
    try:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != b"Z":
                    return True
            except (OSError, IndexError, ValueError):
                continue
        return False
    except OSError:
        return True


def terminate_pids(
    pids: Mapping[str, int], first_signal: Mapping[str, int], timeout: float
) -> None:
    """SIGTERM (or the given signal) each pid, wait, then SIGKILL whatever is left of
    their process groups."""
    for name, pid in pids.items():
        sig = first_signal.get(name, signal.SIGTERM)
        if sig == signal.SIGTERM:
            kill_group(pid, sig)
        else:  # e.g. postgres: fast shutdown is SIGINT to the postmaster only
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    remaining = dict(pids)
    while remaining and time.monotonic() < deadline:
        remaining = {n: p for n, p in remaining.items() if pid_alive(p) or group_alive(p)}
        if remaining:
            time.sleep(0.05)
    for pid in pids.values():
        kill_group(pid, signal.SIGKILL)
    # Wait (briefly) for the kills to land so callers can rely on "nothing left".
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_alive(p) for p in pids.values()):
        time.sleep(0.05)
