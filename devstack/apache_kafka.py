"""Apache Kafka for the local stack (``payments stack up --kafka apache``): the real broker,
``org.apache.kafka:kafka_2.13`` in KRaft mode, one node that is broker and controller.

Its jars come from Maven Central through Maven: ``devstack/apache-kafka/pom.xml`` names them,
``mvn dependency:build-classpath`` downloads them into the user's Maven repository (~/.m2)
once and writes the class path, which is kept in ``~/.cache/payments-cqs/`` (keyed by the
pom's hash) so that Maven runs again only when the pom changes or a jar went missing.
Nothing is downloaded by hand and nothing is copied: the JDK runs the jars where Maven
keeps them.

The broker's settings are those of a stock broker but for what one node needs and what
keeps a test suite fast (``SINGLE_NODE``, docs/design.md section 11); its heap is bounded
(``HEAP``). The JVM's class-data-sharing archive (AppCDS) of the broker's classes is made
at the first broker's clean exit and used by every later start (about 2 s instead of 4-6 s
to a listening broker on this project's machines).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from .endpoints import HOST, StackError
from .pids_and_ports import log_tail

POM = Path(__file__).with_name("apache-kafka") / "pom.xml"
#: The broker's release, as the pom names it (docker-compose.yml's image has the same).
KAFKA_VERSION = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", POM.read_text())[1]
MIN_JAVA = 17
HEAP = "512m"
INSTALL_JAVA_MAVEN = ("install a JDK 17 or newer and Maven (Debian: apt-get install openjdk-17-jdk-headless maven), "
                      "or use another broker: --kafka noida")

#: Broker settings of the single-node local broker beyond a stock broker's defaults: one
#: node holds one replica of the internal topics; a new group's first join is not held
#: back 3 s for more members (tests make hundreds of groups); fewer offsets partitions
#: than 50 to create on the first group. Everything else (session limits 6 s .. 30 min,
#: fetch waits, retention) is the stock broker's.
SINGLE_NODE = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
}

LOG4J2 = """\
# written by devstack/apache_kafka.py: warnings, and the broker's start and stop
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


def java_binary() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    return Path(found) if found else None


def java_major(version_output: str) -> int | None:
    """The major version from ``java -version``'s output (``1.8.0_x`` is 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@functools.lru_cache(maxsize=1)
def missing_tools() -> str | None:
    """None when java (17 or newer) and mvn are there; else one line: what is missing and how to get it."""
    missing = []
    java = java_binary()
    if java is None:
        missing.append(f"java ({MIN_JAVA} or newer)")
    else:
        try:
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
            major = java_major(out.stderr + out.stdout)
        except (OSError, subprocess.SubprocessError):
            major = None
        if major is None or major < MIN_JAVA:
            missing.append(f"java {MIN_JAVA} or newer ({java} is {major or 'unusable'})")
    if shutil.which("mvn") is None:
        missing.append("mvn (Maven)")
    if not missing:
        return None
    return f"Apache Kafka needs {' and '.join(missing)}: {INSTALL_JAVA_MAVEN}"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    pom = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return base / "payments-cqs" / f"apache-kafka-{KAFKA_VERSION}-{pom}"


def classpath(maven_log: Path) -> str:
    """The broker's class path; Maven resolves it (into ~/.m2) when it is not cached yet."""
    cached = cache_dir() / "classpath.txt"
    if cached.is_file():
        jars = cached.read_text().strip()
        if jars and all(Path(jar).is_file() for jar in jars.split(os.pathsep)):
            return jars
    cached.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(f"resolving Apache Kafka {KAFKA_VERSION} with Maven into ~/.m2 (once: about 55 MB from "
                     f"Maven Central the first time; log: {maven_log})…\n")
    sys.stderr.flush()
    partial = cached.with_name(f"classpath.{os.getpid()}.tmp")
    with open(maven_log, "wb") as log:
        try:
            done = subprocess.run(["mvn", "-B", "--no-transfer-progress", "-f", str(POM), "dependency:build-classpath",
                                   f"-Dmdep.outputFile={partial}"], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=900, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StackError(f"could not run Maven ({exc}); {INSTALL_JAVA_MAVEN}") from exc
    if done.returncode != 0 or not partial.is_file():
        raise StackError(f"Maven could not resolve Apache Kafka {KAFKA_VERSION}: {_maven_error(maven_log)} "
                         f"(see {maven_log})")
    partial.replace(cached)
    return cached.read_text().strip()


def _maven_error(maven_log: Path) -> str:
    """Maven's first error line (its last lines are boilerplate links)."""
    text = maven_log.read_text(errors="replace") if maven_log.is_file() else ""
    for line in text.splitlines():
        message = re.sub(r"^(\x1b\[[0-9;]*m)*\[(ERROR|FATAL)\]\s*", "", line).strip()
        if message != line.strip() and len(message) > 10 and not message.startswith("[ERROR]"):
            return message[:300]
    return log_tail(maven_log)


def server_properties(storage: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(storage),
        **SINGLE_NODE,
    }
    return "# written by devstack/apache_kafka.py at each start\n" + "".join(f"{k}={v}\n" for k, v in settings.items())


def cluster_id() -> str:
    """A new KRaft cluster id, as ``kafka-storage random-uuid`` makes one."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class BrokerLaunch:
    """Files and command line of one broker: ``command()`` writes the configuration, formats
    the storage on its first start, and returns the java command; ``exited(code)`` keeps the
    class-data archive a clean exit wrote."""

    def __init__(self, java: Path, storage: Path, config_dir: Path, logs_dir: Path) -> None:
        self.java, self.storage, self.config_dir, self.logs_dir = java, storage, config_dir, logs_dir
        self.archive = cache_dir() / "kafka.jsa"
        self._dumping = cache_dir() / f"kafka.{os.getpid()}.{uuid.uuid4().hex[:6]}.jsa.tmp"

    def command(self, port: int, controller_port: int) -> list[str]:
        jars = classpath(self.logs_dir / "kafka-maven.log")
        props = self.config_dir / "kafka-server.properties"
        props.write_text(server_properties(self.storage, port, controller_port))
        log4j = self.config_dir / "kafka-log4j2.properties"
        log4j.write_text(LOG4J2)
        jvm = [str(self.java), f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}"]
        if not (self.storage / "meta.properties").is_file():
            self._format(jvm, jars, props)
        cds = (f"-XX:SharedArchiveFile={self.archive}" if self.archive.is_file()
               else f"-XX:ArchiveClassesAtExit={self._dumping}")
        return [*jvm, cds, "-cp", jars, "kafka.Kafka", str(props)]

    def _format(self, jvm: list[str], jars: str, props: Path) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / "kafka-format.log"
        with open(log_path, "wb") as log:
            done = subprocess.run([*jvm, "-cp", jars, "kafka.tools.StorageTool", "format", "--cluster-id", cluster_id(),
                                   "--config", str(props)], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=120, check=False)
        if done.returncode != 0:
            raise StackError(f"formatting the Kafka storage failed: {log_tail(log_path)} (see {log_path})")

    def exited(self, code: int | None) -> None:
        """After the broker's exit: a class-data archive is complete only after a clean exit
        (SIGTERM is 143); otherwise it is dropped."""
        if self._dumping.is_file():
            if code in (0, 143) and self._dumping.stat().st_size > 0:
                self._dumping.replace(self.archive)
            else:
                self._dumping.unlink(missing_ok=True)
