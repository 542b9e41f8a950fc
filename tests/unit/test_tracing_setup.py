"""Tracing is configured only by the standard OTEL_* variables (shared/tracing_setup.py).
Each case runs in a fresh interpreter: a tracer provider is set once per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
from opentelemetry import trace
from shared import tracing
from shared.tracing_setup import start_tracing
on = start_tracing("relay")
resource = trace.get_tracer_provider().resource.attributes if on else {}
print(on, tracing.enabled(), resource.get("service.name"), resource.get("deployment.environment"),
      type(trace.get_tracer_provider().sampler).__name__ if on else None, len(tracing.temporal_interceptors()))
"""


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_an_endpoint_nothing_is_installed() -> None:
    assert _probe() == "False False None None None 0"
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="") == "False False None None None 0"


def test_an_endpoint_turns_tracing_on_named_after_the_process() -> None:
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9") == "True True relay None ParentBased 1"
    assert _probe(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/v1/traces").startswith("True True relay")


def test_the_standard_variables_win() -> None:
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="billing-relay",
                  OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging",
                  OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5"
                  ) == "True True billing-relay staging TraceIdRatioBased 1"
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true").startswith("False")
    assert _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none").startswith("False")


@pytest.mark.parametrize(("name", "value"), [("OTEL_TRACES_EXPORTER", "zipkin"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                                             ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
def test_what_the_image_cannot_export_stops_the_process_with_one_line(name: str, value: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYMENTS_"))}
    done = subprocess.run([sys.executable, "-m", "services.cli", "relay"], capture_output=True, text=True, timeout=60,
                          env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", name: value})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: relay: {name}={value}"), done.stderr
