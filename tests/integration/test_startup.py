"""A process whose servers do not answer exits 1 with one line naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_") or k == "PAYMENTS_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env={**clean, "PAYMENTS_STARTUP_TIMEOUT_SECONDS": "1", "PAYMENTS_LOG_JSON": "false", **env},
                          timeout=60)


@pytest.mark.parametrize(
    ("process", "env", "setting"),
    [
        ("command-api", {"PAYMENTS_DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/db"}, "PAYMENTS_DATABASE_URL"),
        ("projector", {"PAYMENTS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "PAYMENTS_KAFKA_BOOTSTRAP"),
        ("query-api", {"PAYMENTS_MONGO_URL": "mongodb://127.0.0.1:1/?directConnection=true"}, "PAYMENTS_MONGO_URL"),
        ("migrate", {"PAYMENTS_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}, "PAYMENTS_DATABASE_URL"),
    ],
)
def test_unreachable_server_is_one_clear_line(process: str, env: dict[str, str], setting: str) -> None:
    result = _run([process], **env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and setting in errors[0] and f"{process}:" in errors[0], result.stderr
    assert "secret" not in result.stderr  # passwords are redacted


def test_help_does_not_wait_for_servers() -> None:
    result = _run(["command-api", "--help"], PAYMENTS_DATABASE_URL="postgresql://u@127.0.0.1:1/db")
    assert result.returncode == 0 and "Usage" in result.stdout


@pytest.mark.parametrize("process", ["command-api", "query-api"])
def test_an_api_beyond_loopback_refuses_the_development_secret(process: str) -> None:
    result = _run([process], PAYMENTS_HOST="0.0.0.0")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PAYMENTS_JWT_SECRET" in errors[0] and "PAYMENTS_JWT_JWKS_URL" in errors[0], errors


def test_the_development_secret_beyond_loopback_only_when_told() -> None:
    # Allowed: the process goes on to wait for its servers (none here: it stops there).
    result = _run(["query-api"], PAYMENTS_HOST="0.0.0.0", PAYMENTS_ALLOW_DEV_JWT_SECRET="true",
                  PAYMENTS_MONGO_URL="mongodb://127.0.0.1:1/?directConnection=true")
    assert result.returncode == 1 and "PAYMENTS_MONGO_URL" in result.stderr and "JWT" in result.stderr, result.stderr


def test_the_webhooks_process_beyond_loopback_refuses_the_development_key() -> None:
    result = _run(["webhooks"], PAYMENTS_HOST="0.0.0.0")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "PAYMENTS_WEBHOOKS_SECRET_KEY" in errors[0], result.stderr


@pytest.mark.parametrize("process", ["command-api", "webhooks"])
def test_private_webhook_receivers_are_refused_beyond_loopback(process: str) -> None:
    result = _run([process], PAYMENTS_HOST="0.0.0.0", PAYMENTS_JWT_SECRET="x" * 40,
                  PAYMENTS_WEBHOOKS_SECRET_KEY="y" * 40, PAYMENTS_WEBHOOKS_ALLOW_PRIVATE="true")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "PAYMENTS_WEBHOOKS_ALLOW_PRIVATE" in errors[0], \
        result.stderr
