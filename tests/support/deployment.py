"""What the deployment must give each process: the settings it needs, the secrets no
other may receive, and the PAYMENTS_* names pydantic-settings reads (compose and the
Kubernetes manifests are checked against them)."""

from __future__ import annotations

from shared.processes import LONG_RUNNING
from shared.settings import Settings

# The settings (Settings field names) each long-running process cannot run without,
# besides its host and port: what the deployment must give it.
NEEDS: dict[str, set[str]] = {
    "command-api": {"database_url", "temporal_address", "temporal_namespace", "jwt_secret",
                    "jwt_algorithm", "consistency_token_secret", "webhooks_secret_key"},
    "command-worker": {"database_url", "temporal_address", "temporal_namespace"},
    "relay": {"database_url", "kafka_bootstrap", "events_topic"},
    "intake": {"database_url", "kafka_bootstrap", "temporal_address", "temporal_namespace",
               "commands_topic", "command_results_topic", "commands_dlq_topic"},
    "query-api": {"mongo_url", "mongo_db", "redis_url", "jwt_secret", "jwt_algorithm", "consistency_token_secret"},
    "projector": {"kafka_bootstrap", "events_topic", "dlq_topic", "mongo_url", "mongo_db", "redis_url"},
    "query-worker": {"mongo_url", "mongo_db", "redis_url", "temporal_address", "temporal_namespace",
                     "consistency_token_secret"},
    "webhooks": {"database_url", "kafka_bootstrap", "events_topic", "temporal_address", "temporal_namespace",
                 "consistency_token_secret", "webhooks_secret_key"},
}
# The long-running processes of the process table (shared/processes.py): side, the
# setting holding its port, and the settings it needs.
PROCESSES: dict[str, dict] = {
    p.name: {"side": p.wing, "port_field": p.port_setting, "needs": NEEDS[p.name] | {"host", p.port_setting}}
    for p in LONG_RUNNING
}
# Secret settings: a process that does not need one must not receive it.
SECRET_FIELDS = {"database_url", "mongo_url", "redis_url", "jwt_secret", "consistency_token_secret",
                 "webhooks_secret_key"}


def settings_env_names() -> dict[str, str]:
    """PAYMENTS_* variable -> Settings field, as pydantic-settings reads them."""
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper(): name for name in Settings.model_fields}


def command_settings_env_names() -> dict[str, str]:
    """The command service's own knobs (services/command/config.py), if importable."""
    try:
        from services.command.config import CommandSettings
    except ImportError:  # pragma: no cover - command side not installed
        return {}
    prefix = CommandSettings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper(): name for name in CommandSettings.model_fields}
