"""``LocalStack``: start the local servers, wait until they answer, write stack.json,
stop them again. Launching is in ``launch`` (``ServerLaunch``), waiting in
``readiness`` (``ReadinessChecks``)."""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from .background import SERVER_ACTIONS, answer_server_action, pending_server_actions
from .binaries import check_binaries
from .brokers import KAFKA_BROKERS, broker
from .endpoints import (
    DEFAULT_DATA_DIR,
    PORT_NAMES,
    STACK_FILE_NAME,
    Endpoints,
    StackError,
    read_stack_file,
    write_stack_file,
)
from .launch import Child, ServerLaunch
from .pids_and_ports import pick_ports, pid_alive, terminate_pids
from .readiness import ReadinessChecks, run_async


class LocalStack(ServerLaunch, ReadinessChecks):
    """Start (and stop) the local servers: a context manager, or ``start()`` / ``stop()``.

    data_dir   where stack.json, logs/ and persistent data go (default ``.payments``)
    persist    keep Temporal, MongoDB and PostgreSQL data under data_dir across runs
    headless   no Temporal web UI
    ports      fixed ports by name (see PORT_NAMES); others are picked free
    *_url / temporal_address / kafka_bootstrap
               use this existing server instead of starting one (checked for reachability)
    binaries   override the location of a server binary by service name
    kafka_broker  the Kafka to start: "apache" (Apache Kafka, needs java 17+ and mvn), "noida" (noida-db) or
               "tansu" (memory only); devstack/brokers.py
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        persist: bool = False,
        headless: bool = False,
        ports: Mapping[str, int] | None = None,
        database_url: str | None = None,
        redis_url: str | None = None,
        temporal_address: str | None = None,
        kafka_bootstrap: str | None = None,
        mongo_url: str | None = None,
        temporal_namespace: str = "default",
        binaries: Mapping[str, str | os.PathLike[str]] | None = None,
        ready_timeout: float = 60.0,
        external_timeout: float = 5.0,
        stop_timeout: float = 10.0,
        write_stack_file: bool = True,
        kafka_broker: str = KAFKA_BROKERS[0],
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.persist = persist
        self.headless = headless
        unknown = set(ports or {}) - set(PORT_NAMES)
        if unknown:
            raise StackError(f"unknown port name(s) {sorted(unknown)}; use {', '.join(PORT_NAMES)}")
        self.fixed_ports = {k: int(v) for k, v in (ports or {}).items() if v}
        self.external: dict[str, str] = {
            k: v
            for k, v in {
                "temporal": temporal_address,
                "kafka": kafka_bootstrap,
                "mongo": mongo_url,
                "postgres": database_url,
                "redis": redis_url,
            }.items()
            if v
        }
        self.temporal_namespace = temporal_namespace
        self.binary_overrides = {k: Path(v) for k, v in (binaries or {}).items()}
        self.ready_timeout = ready_timeout
        self.external_timeout = external_timeout
        self.stop_timeout = stop_timeout
        self.write_stack_file = write_stack_file
        self.kafka_broker = kafka_broker

        self.endpoints: Endpoints | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._children: dict[str, Child] = {}
        self._binaries: dict[str, Path] = {}
        self._ephemeral_dirs: list[Path] = []
        self._lock = threading.Lock()
        self._atexit_registered = False

    # ------------------------------------------------------------------ public API

    @property
    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE_NAME

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pids(self) -> dict[str, int]:
        return {name: c.popen.pid for name, c in self._children.items()}

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Endpoints:
        """Start every server not given as a URL, wait until all answer, create the
        Kafka topics and write stack.json. Raises StackError (after stopping whatever
        it started) on failure."""
        if self.endpoints is not None:
            return self.endpoints
        t0 = time.monotonic()
        binaries = check_binaries(self.binary_overrides, self.external, self.kafka_broker)
        self._binaries = binaries
        self._check_not_running()
        self._pick_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            endpoints = self._launch(binaries)
            endpoints.client_settings = self.client_settings()
            run_async(lambda: self._wait_ready(endpoints))
            endpoints.pids = self.pids
            self.endpoints = endpoints
            self.startup_seconds = time.monotonic() - t0
            if self.write_stack_file:
                self._write_stack_file(endpoints)
        except BaseException:
            self.stop()
            raise
        return endpoints

    def stop(self) -> None:
        """Stop every child (SIGTERM, SIGKILL after stop_timeout, whole process groups)
        and remove stack.json. Safe to call more than once."""
        with self._lock:
            children = dict(self._children)
            if children:
                terminate_pids(
                    {n: c.popen.pid for n, c in children.items()},
                    {n: c.stop_signal for n, c in children.items()},
                    self.stop_timeout,
                )
                for c in children.values():
                    c.reap()
            # Forget the children only once they are gone, so that a stop() interrupted
            # (e.g. by a second Ctrl-C) can be retried.
            self._children = {}
            if self.endpoints is not None and self.write_stack_file:
                data = read_stack_file(self.data_dir)
                if data is None or data.get("owner_pid") == os.getpid():
                    with contextlib.suppress(FileNotFoundError):
                        self.stack_file.unlink()
            self.endpoints = None
            for d in self._ephemeral_dirs:
                shutil.rmtree(d, ignore_errors=True)
                with contextlib.suppress(OSError):
                    d.parent.rmdir()  # data_dir/run, when empty
            self._ephemeral_dirs = []

    # ------------------------------------------------------------------ one server

    def _own(self, name: str) -> Child:
        child = self._children.get(name)
        if self.endpoints is None or child is None:
            started = ", ".join(sorted(self._children)) or "none"
            raise StackError(f"{name} is not a server this stack started (started: {started})")
        return child

    def stop_server(self, name: str) -> None:
        """Stop one server, leaving the others running (its record stays, so that
        ``start_server`` reuses its port and, for Kafka and MongoDB, its data)."""
        child = self._own(name)
        if child.popen.poll() is None:
            terminate_pids({name: child.popen.pid}, {name: child.stop_signal}, self.stop_timeout)
            child.reap()

    def start_server(self, name: str) -> None:
        """(Re)start one stopped or exited server on its port and wait until it answers;
        a running one is left alone."""
        child = self._own(name)
        if child.popen.poll() is None:
            return
        assert self.endpoints is not None
        self._launch_server(name, self._binaries[name])
        endpoints = self.endpoints
        run_async(lambda: self._wait_ready(endpoints, only=(name,)))
        endpoints.pids = self.pids
        if self.write_stack_file:
            self._write_stack_file(endpoints)

    def restart_server(self, name: str) -> None:
        self.stop_server(name)
        self.start_server(name)

    def serve_server_actions(self) -> list[str]:
        """Carry out the ``payments stack start|stop|restart NAME`` requests waiting in
        data_dir/control (called by the process that owns the stack); returns one line
        per request done."""
        done = []
        for name, action in pending_server_actions(self.data_dir):
            try:
                if action not in SERVER_ACTIONS:
                    raise StackError(f"unknown action {action!r}; use {', '.join(SERVER_ACTIONS)}")
                {"start": self.start_server, "stop": self.stop_server, "restart": self.restart_server}[action](name)
                answer = "ok"
                if action == "stop" and self.endpoints is not None and self.write_stack_file:
                    self._write_stack_file(self.endpoints)
            except StackError as exc:
                answer = str(exc)
            answer_server_action(self.data_dir, name, answer)
            done.append(f"{action} {name}: {answer}")
        return done

    def client_settings(self) -> dict[str, object]:
        """Settings the processes need on this stack's embedded Kafka (written to
        stack.json and to ``payments up``'s environment). Nothing for an external Kafka:
        there the production defaults apply and its topics are the deployment's."""
        if "kafka" in self.external:
            return {}
        # One broker: replication 1, and the processes may (re)create a topic. Then a
        # stand-in's quirks (devstack/brokers.py, docs/design.md section 11).
        return {"kafka_create_topics": True, "kafka_topic_replication_factor": 1,
                "kafka_topic_min_insync_replicas": 1, **broker(self.kafka_broker).settings}

    @property
    def static_members(self) -> bool:
        """Whether the processes on this stack need a static group instance id per slot
        (devstack.system.member_env): only on the stand-in that never evicts a vanished member."""
        return "kafka" not in self.external and broker(self.kafka_broker).static_members

    def exited(self) -> dict[str, int]:
        """Children that have exited since start: name -> exit code."""
        return {n: c.popen.returncode for n, c in self._children.items() if c.popen.poll() is not None}

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    # ------------------------------------------------------------------ checks

    def _check_not_running(self) -> None:
        data = read_stack_file(self.data_dir)
        if not data:
            return
        owner = data.get("owner_pid")
        live = [n for n, p in (data.get("pids") or {}).items() if pid_alive(p)]
        if (owner and owner != os.getpid() and pid_alive(owner)) or live:
            raise StackError(
                f"a stack is already running in {self.data_dir} (pid {owner}); "
                f"stop it with: payments stack down --data-dir {self.data_dir}"
            )
        # Stale file from a stack that died: ignore it (it is rewritten after start).

    def _pick_ports(self) -> None:
        wanted = [n for n in PORT_NAMES if self._needs_port(n)]
        self.ports.update(pick_ports(wanted, self.fixed_ports))

    def _needs_port(self, name: str) -> bool:
        if name == "temporal_ui":
            return "temporal" not in self.external and not self.headless
        return name not in self.external

    # ------------------------------------------------------------------ stack.json
    def _write_stack_file(self, ep: Endpoints) -> None:
        data = {
            "settings": ep.as_settings(),
            "pids": ep.pids,
            "owner_pid": os.getpid(),
            "ports": self.ports,
            "external": sorted(self.external),
            "logs": {n: str(c.log_path) for n, c in self._children.items()},
            "persist": self.persist,
            "kafka_broker": self.kafka_broker,
            "data_dir": str(self.data_dir),
            "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "startup_seconds": round(self.startup_seconds or 0.0, 2),
        }
        write_stack_file(self.stack_file, data)
