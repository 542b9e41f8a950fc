"""The processes a Deployment runs: migrate, command-api, command-worker (relay: see
test_outbox_relay.py). Each is started as `payments ...` and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from shared.net import free_port


def _env(settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "PAYMENTS_DATABASE_URL": settings.database_url,
            "PAYMENTS_TEMPORAL_ADDRESS": settings.temporal_address,
            "PAYMENTS_COMMAND_TASK_QUEUE": settings.command_task_queue, **extra}


def _payments(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited early: {process.stderr.read()[-2000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} never became ready")


def _stop(process: subprocess.Popen, *, codes: tuple[int, ...] = (0,)) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("did not stop on SIGTERM")
    assert process.returncode in codes, stderr[-2000:]
    return stderr


def test_migrate_is_idempotent(runtime):
    done = subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env=_env(runtime.settings), check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout  # the runtime fixture already migrated this database


def test_command_api_serves_and_stops_on_sigterm(runtime):
    port = free_port()
    api = _payments("command-api", "--port", str(port), "--no-embedded-worker", env=_env(runtime.settings))
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz", api)
        assert ready.json()["checks"] == {"postgres": "ok", "temporal": "ok"}
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/v1/payments" in spec["paths"]
    finally:
        if api.poll() is None:
            # uvicorn shuts down gracefully, then re-raises the signal it caught.
            stderr = _stop(api, codes=(0, -signal.SIGTERM))
            assert "Application shutdown complete" in stderr


def test_command_worker_serves_ops_and_stops_on_sigterm(runtime):
    port = free_port()
    worker = _payments("command-worker", env=_env(runtime.settings, PAYMENTS_COMMAND_WORKER_METRICS_PORT=str(port)))
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", worker)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "payments_commands_total" in metrics or "payments_command_duration_seconds" in metrics
    finally:
        if worker.poll() is None:
            stderr = _stop(worker)
            assert '"msg": "command worker stopping"' in stderr
