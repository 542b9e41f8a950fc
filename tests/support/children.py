"""A long-running ``payments`` process as a real child of a test (so that it can be
SIGKILLed and started again), and ``eventually``, the one polling wait of the tests
(no fixed sleeps). ``ProjectorProcess`` is ``payments projector`` on a query test's settings.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from devstack.system import GROUP_INSTANCE_ID_ENV, member_env
from shared.processes import BY_NAME
from shared.settings import Settings
from tests.support.brokers import static_members


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.3)


class ChildProcess:
    """``payments <process> [args]`` with ``env``, its ops endpoint on ``port``, its output
    in ``log_dir``. ``slot``: the replica slot of a process that comes back after a kill;
    on a broker that needs it (noida-db: ``LocalStack.static_members``) it is a static
    group instance id, as the local stack gives it (devstack.system.member_env), elsewhere
    the process is a dynamic member, as in production (``static`` decides for a broker that
    is not the session's). None for an extra replica that stops for good (always dynamic:
    it leaves its group on SIGTERM)."""

    def __init__(self, process: str, env: dict[str, str], log_dir: Path, port: int, *args: str,
                 slot: int | None = 0, static: bool | None = None) -> None:
        self.process, self.args, self.log_dir, self.port, self.slot = process, args, log_dir, port, slot
        self.env = dict(env)
        self.env.pop(GROUP_INSTANCE_ID_ENV, None)
        if slot is not None and (static_members() if static is None else static):
            self.env.update(member_env(BY_NAME[process], slot))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def _log_prefix(self) -> str:
        return f"{self.process}-{id(self)}-"

    def start(self) -> None:
        self.runs += 1
        log = open(self.log_dir / f"{self._log_prefix}{self.runs}.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", self.process, *self.args],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 30.0) -> None:
        async def check() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.logs()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(check, timeout, f"{self.process}'s /readyz")

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log_dir.glob(f"{self._log_prefix}*.log")))


def settings_env(s: Settings) -> dict[str, str]:
    """The environment a child process reads ``s`` from (what a query test moved)."""
    env = dict(os.environ)
    for name in ("kafka_bootstrap", "mongo_url", "mongo_db", "redis_url", "events_topic", "dlq_topic",
                 "projector_group", "projector_metrics_port", "data_dir", "jwt_secret"):
        env[f"PAYMENTS_{name.upper()}"] = str(getattr(s, name))
    return env


class ProjectorProcess(ChildProcess):
    """``payments projector`` on the test's settings."""

    def __init__(self, s: Settings, log_dir: Path, *args: str, slot: int | None = 0,
                 env: dict[str, str] | None = None, static: bool | None = None) -> None:
        self.settings = s
        super().__init__("projector", env if env is not None else settings_env(s), log_dir,
                         s.projector_metrics_port, *args, slot=slot, static=static)
