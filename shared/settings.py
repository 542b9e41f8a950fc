"""Settings for every process, from ``PAYMENTS_*`` environment variables.

Precedence: explicit arguments > environment > the endpoints file written by
``payments stack up`` (``.payments/stack.json``) > built-in defaults. The endpoints
file is what lets ``payments command-api`` find a stack started in another terminal
without exporting anything.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from shared.expiry import ExpiryPolicy
from shared.processes import port_default

# Where `payments stack up` keeps its data and endpoints file (devstack/ reads these too).
DEFAULT_DATA_DIR = Path(".payments")
STACK_FILE_NAME = "stack.json"


def stack_file_path() -> Path:
    data_dir = Path(os.environ.get("PAYMENTS_DATA_DIR", str(DEFAULT_DATA_DIR)))
    return data_dir / STACK_FILE_NAME


# Only for local use: a process listening beyond loopback with it logs a warning.
DEV_JWT_SECRET = "dev-secret-change-me-please-32bytes!"
DEV_CONSISTENCY_TOKEN_SECRET = "dev-consistency-secret-change-me!"
DEV_WEBHOOKS_SECRET_KEY = "dev-webhooks-key-change-me-please!"


class StackFileSource(PydanticBaseSettingsSource):
    """Endpoints written by ``payments stack up`` (keys are Settings field names)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        path = stack_file_path()
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                self._values = dict(data.get("settings", {}))
            except (OSError, ValueError):
                self._values = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    # Where the local stack keeps its data and its endpoints file.
    data_dir: Path = DEFAULT_DATA_DIR

    # Infrastructure
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    kafka_bootstrap: str = "127.0.0.1:9092"
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "payments"
    # Searches and exports pass choose_index's hint to MongoDB (issue 26): for a server whose
    # planner may pick a worse org-prefixed index. Off: SecantusDB decodes the whole collection
    # for a hinted query, 4-8x slower than its own plan (docs/benchmarks.md).
    mongo_index_hints: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str | None = None

    # Contracts
    events_topic: str = "payments.events"
    dlq_topic: str = "payments.events.dlq"
    event_source: str = "/payments/command"
    # The read side projects only events from these sources (the command service's own
    # PAYMENTS_EVENT_SOURCE is always trusted); others are dead-lettered. Comma-separated.
    trusted_event_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Command intake (Kafka producers of commands): its input, results and dead letters.
    commands_topic: str = "payments.commands"
    command_results_topic: str = "payments.command-results"
    commands_dlq_topic: str = "payments.commands.dlq"
    command_task_queue: str = "payments-commands"
    query_task_queue: str = "payments-queries"

    # Kafka clients (the projector's consumer, the relay's and the projector's producers).
    # Defaults are right for a real cluster: a stock broker refuses a consumer session
    # outside group.min/max.session.timeout.ms (6 s .. 30 min). The local stack may
    # write faster values into stack.json; the processes also run with these defaults.
    kafka_session_timeout_seconds: float = Field(default=10.0, gt=0)
    kafka_heartbeat_interval_seconds: float = Field(default=3.0, gt=0)
    # Longest a consumer fetch waits for records (Kafka's own default, 500 ms). A broker
    # that answers a waiting fetch when records arrive makes it irrelevant for latency;
    # Tansu does not, so the local stack on Tansu sets 25.
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=30000)
    # Least time between a consumer's fetch and the next when the first came back empty.
    # Kafka holds an empty fetch for fetch_max_wait_ms, so 0 (off) is right there; noida-db
    # answers it at once, and a consumer would re-fetch in a busy loop (bench/empty_fetch_pause.py:
    # 1,880 fetches/s, 77 % of a core per idle consumer), so the local stack on noida-db sets 5.
    kafka_empty_fetch_pause_ms: int = Field(default=0, ge=0, le=1000)
    kafka_producer_acks: str = Field(default="all", pattern="^(all|-1|0|1)$")
    # Needs acks=all; Tansu has no idempotent producer, so the local stack on Tansu sets false.
    kafka_producer_idempotence: bool = True
    kafka_producer_linger_ms: int = Field(default=2, ge=0)
    # Static group membership (KIP-345) of this process's consumer (the projector's, the
    # intake's): a member restarted with the same id takes its partitions back at once,
    # without waiting for the session timeout or a rebalance. Unset (the default) is
    # dynamic membership, right for a Kubernetes Deployment, whose pods have no stable
    # name. Set it only to an identity that is stable and unique per replica within the
    # group (a StatefulSet's pod name): a second process with the same id fences the
    # first, and a static member that stops for good keeps its partitions until its
    # session times out, since it does not leave the group.
    kafka_group_instance_id: str | None = Field(default=None, min_length=1, max_length=249)

    # Kafka topics are created by the deployment (Helm hook Job, compose kafka-init, the
    # local stack). A process creates a missing topic only with kafka_create_topics (the
    # local stack sets it); otherwise it reports not-ready while the topic is missing.
    kafka_create_topics: bool = False
    events_topic_partitions: int = Field(default=3, ge=1)
    commands_topic_partitions: int = Field(default=3, ge=1)  # and the command results topic
    # The projector's consumer group (the intake's is PAYMENTS_INTAKE_GROUP).
    projector_group: str = "payments-projector"
    kafka_topic_replication_factor: int = Field(default=3, ge=1)
    kafka_topic_min_insync_replicas: int = Field(default=2, ge=1)

    # Auth: tokens of your identity provider, verified with its key set (JWKS URL), or
    # for local use tokens signed with a shared HS256 secret.
    jwt_secret: str = Field(default=DEV_JWT_SECRET, repr=False)
    jwt_algorithm: str = "HS256"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Signs the Consistency-Token of command results (shared/consistency.py): the command
    # API, the query API, the query worker and facade callers must all share it.
    consistency_token_secret: str = Field(default=DEV_CONSISTENCY_TOKEN_SECRET, min_length=16, repr=False)

    jwt_jwks_url: str | None = None
    jwt_jwks_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwt_jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    jwt_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    # A process listening beyond loopback refuses the built-in secret unless this is set.
    allow_dev_jwt_secret: bool = False
    # Signs search cursors; by default a key derived from PAYMENTS_JWT_SECRET.
    cursor_secret: str | None = Field(default=None, repr=False)

    # Payment deadlines (expires_at, issue 24): how far ahead one may be (default 30 days),
    # and the one a payment created without gets (unset: none, it never expires).
    payment_max_ttl_seconds: float = Field(default=30 * 24 * 3600, gt=0)
    payment_default_ttl_seconds: float | None = Field(default=None, gt=0)

    # Query side: how long a read that must reflect given writes (min_version,
    # consistent_with) waits for the read model before answering 409 read-model-behind.
    read_wait_seconds: float = Field(default=5.0, gt=0, le=30)

    # Ports of the processes (HTTP API, or the metrics/health endpoint of a worker).
    host: str = "127.0.0.1"
    # Defaults from the process table (shared/processes.py), which the healthcheck reads too.
    command_api_port: int = port_default("command-api")
    query_api_port: int = port_default("query-api")
    command_worker_metrics_port: int = port_default("command-worker")
    relay_metrics_port: int = port_default("relay")
    projector_metrics_port: int = port_default("projector")
    query_worker_metrics_port: int = port_default("query-worker")
    intake_metrics_port: int = port_default("intake")
    webhooks_metrics_port: int = port_default("webhooks")

    # Webhooks (issue 27, docs/webhooks.md). The key encrypts endpoints' signing secrets at
    # rest (the command API and `payments webhooks` must share it); its built-in value is
    # refused beyond loopback like the development JWT secret.
    webhooks_secret_key: str = Field(default=DEV_WEBHOOKS_SECRET_KEY, min_length=16, repr=False)
    # http:// and loopback/private receivers: the local stack and tests only (refused when
    # the API listens beyond loopback).
    webhooks_allow_private: bool = False
    webhooks_group: str = "payments-webhooks"
    webhooks_task_queue: str = "payments-webhooks"
    webhooks_max_endpoints_per_org: int = Field(default=16, ge=1, le=1000)
    # Deliveries being attempted at once per `payments webhooks` process, and of one organization.
    webhooks_max_in_flight: int = Field(default=64, ge=1, le=10000)
    webhooks_max_in_flight_per_org: int = Field(default=8, ge=1, le=1000)
    webhooks_max_retry_seconds: float = Field(default=3 * 24 * 3600, gt=0)
    webhooks_disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    webhooks_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhooks_retry_cap_seconds: float = Field(default=3600.0, gt=0)
    # How long the previous secret keeps signing after a rotation, unless the request says.
    webhooks_rotation_overlap_seconds: float = Field(default=24 * 3600, ge=0, le=7 * 24 * 3600)
    webhooks_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhooks_response_cap_bytes: int = Field(default=4096, ge=0, le=1 << 20)

    # `payments reconcile` pushes its drift gauge here (a Prometheus Pushgateway URL), if set.
    reconcile_pushgateway_url: str | None = None

    # How long a process waits for its servers at start-up before it exits with an error.
    startup_timeout_seconds: float = 30.0

    # Logging
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("trusted_event_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def trusted_sources(self) -> frozenset[str]:
        """Event sources the projector accepts: our own plus the configured ones."""
        return frozenset({self.event_source, *self.trusted_event_sources})

    def expiry_policy(self) -> ExpiryPolicy:
        default = self.payment_default_ttl_seconds
        return ExpiryPolicy(timedelta(seconds=self.payment_max_ttl_seconds),
                            timedelta(seconds=default) if default is not None else None)

    @model_validator(mode="after")
    def _kafka_limits(self) -> Settings:
        # Kafka's rule: heartbeats well inside the session (at most a third of it).
        if self.kafka_heartbeat_interval_seconds * 3 > self.kafka_session_timeout_seconds:
            raise ValueError("PAYMENTS_KAFKA_HEARTBEAT_INTERVAL_SECONDS must be at most a third of "
                             "PAYMENTS_KAFKA_SESSION_TIMEOUT_SECONDS")
        if self.kafka_producer_idempotence and self.kafka_producer_acks not in ("all", "-1"):
            raise ValueError("PAYMENTS_KAFKA_PRODUCER_IDEMPOTENCE needs PAYMENTS_KAFKA_PRODUCER_ACKS=all")
        if self.kafka_topic_min_insync_replicas > self.kafka_topic_replication_factor:
            raise ValueError("PAYMENTS_KAFKA_TOPIC_MIN_INSYNC_REPLICAS must not exceed "
                             "PAYMENTS_KAFKA_TOPIC_REPLICATION_FACTOR")
        if (self.payment_default_ttl_seconds or 0) > self.payment_max_ttl_seconds:
            raise ValueError("PAYMENTS_PAYMENT_DEFAULT_TTL_SECONDS must not exceed PAYMENTS_PAYMENT_MAX_TTL_SECONDS")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, StackFileSource(settings_cls), file_secret_settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
