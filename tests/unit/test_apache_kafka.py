"""The local stack's Apache Kafka (devstack/apache_kafka.py) without starting it: what it
needs from the machine, and the single-node broker's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import StackError, apache_kafka
from devstack.binaries import check_binaries
from devstack.brokers import BROKERS, session_broker


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    monkeypatch.delenv("JAVA_HOME", raising=False)
    apache_kafka.missing_tools.cache_clear()
    yield
    apache_kafka.missing_tools.cache_clear()


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17), ('openjdk version "25" 2025-09-16', 25),
    ('java version "1.8.0_392"', 8), ("no version here", None),
])
def test_the_java_major_version_is_read_from_java_version(output: str, major: int | None) -> None:
    assert apache_kafka.java_major(output) == major


def test_without_java_or_maven_one_line_says_what_is_missing_and_how_to_get_it(no_tools) -> None:
    message = apache_kafka.missing_tools()
    assert message is not None and "\n" not in message
    assert "java (17 or newer)" in message and "mvn (Maven)" in message
    assert "apt-get install openjdk-17-jdk-headless maven" in message and "--kafka noida" in message
    with pytest.raises(StackError, match="Apache Kafka needs java"):
        check_binaries({}, external=(), kafka_broker="apache")
    check_binaries({"kafka": Path("/bin/true")}, external=("temporal", "mongo", "postgres", "redis"),
                   kafka_broker="apache")  # a given binary needs neither


def test_a_session_without_java_or_maven_runs_on_noida_db_and_says_so(no_tools) -> None:
    broker, why = session_broker()
    assert broker == "noida" and why is not None and why.startswith("Kafka: noida-db, not Apache Kafka (")


def test_the_single_node_broker_is_a_stock_broker_but_for_one_node_and_fast_group_joins(tmp_path: Path) -> None:
    text = apache_kafka.server_properties(tmp_path / "log", 19092, 19093)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093" and props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path / "log")
    assert props["group.initial.rebalance.delay.ms"] == "0" and props["offsets.topic.replication.factor"] == "1"
    # Kafka's group session limits (6 s .. 30 min) and everything else stay the stock broker's.
    assert not [k for k in props if k.startswith("group.") and "session" in k]


def test_only_the_stand_in_that_never_evicts_a_member_needs_static_ids_and_paced_fetches() -> None:
    assert [b.name for b in BROKERS.values() if b.static_members] == ["noida"]
    assert BROKERS["apache"].settings == {}
    assert [b.name for b in BROKERS.values() if "kafka_empty_fetch_pause_ms" in b.settings] == ["noida"]


def test_a_kraft_cluster_id_is_22_url_safe_characters() -> None:
    ids = {apache_kafka.cluster_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_docker_compose_deploys_the_kafka_release_the_tests_run_on() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{apache_kafka.KAFKA_VERSION}"
