"""CPU per process during a benchmark step: which process is the bottleneck?

A process at ~100 % of one core is saturated (Python and the Temporal dev server's
hot paths are effectively single-threaded here); the machine's total tells whether the
cores themselves are. PostgreSQL is the sum of its backends (one process per connection).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil


def listening_pid(port: int) -> int | None:
    """The process that listens on TCP ``port`` on this machine."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def _cpu(pids: set[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def _postgres_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in {"postgres", "postmaster"}}


@dataclass
class CpuSample:
    """CPU of named processes over a step, in % of one core."""

    processes: dict[str, int | None]  # name -> pid (None: PostgreSQL's backends, found each time)

    def __post_init__(self) -> None:
        self._start: dict[str, dict[int, float]] = {}
        self._t0 = 0.0
        self._total0 = 0.0

    def _now(self) -> dict[str, dict[int, float]]:
        return {name: _cpu(_postgres_pids() if pid is None else {pid}) for name, pid in self.processes.items()}

    def start(self) -> None:
        self._start = self._now()
        self._t0 = time.perf_counter()
        self._total0 = sum(psutil.cpu_times()[:3])  # user, nice, system of all cores

    def stop(self) -> dict[str, float]:
        """``{name: % of one core}`` plus ``machine`` (% of all cores together)."""
        end = self._now()
        wall = time.perf_counter() - self._t0
        shares = {}
        for name, pids in end.items():
            before = self._start.get(name, {})
            used = sum(seconds - before.get(pid, 0.0) for pid, seconds in pids.items())
            shares[name] = 100 * used / wall
        shares["machine"] = 100 * (sum(psutil.cpu_times()[:3]) - self._total0) / wall / (os.cpu_count() or 1)
        return shares


def bottleneck(shares: dict[str, float]) -> str:
    """The busiest process, flagged when it (or the machine) is saturated."""
    name, busiest = max(((n, s) for n, s in shares.items() if n != "machine"), key=lambda item: item[1])
    if busiest >= 85:
        return f"{name} ({busiest:.0f} %)"
    if shares["machine"] >= 85:
        return f"CPU (machine {shares['machine']:.0f} %; {name} {busiest:.0f} %)"
    return f"none saturated ({name} {busiest:.0f} %)"
