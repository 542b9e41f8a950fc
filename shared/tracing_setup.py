"""Tracing set-up from the standard ``OTEL_*`` variables, once per process (services/cli.py).

A process traces when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set
and ``OTEL_SDK_DISABLED`` is not: OTLP over http/protobuf (grpc if its exporter is
installed), the sampler of ``OTEL_TRACES_SAMPLER`` / ``..._ARG``, the batch limits of
``OTEL_BSP_*``, the resource of ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``, whose
``service.name`` defaults to the process's name in the process table. Otherwise nothing is
installed: no SDK, no instrumentation, no interceptor.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace

from shared import tracing

log = logging.getLogger("payments.tracing")


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something this process cannot do."""


def wanted() -> bool:
    """True when the environment asks for traces (an OTLP endpoint, the SDK not disabled)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def start_tracing(process: str) -> bool:
    """At a process's start (services/cli.py): trace and export if the environment asks."""
    if not wanted():
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(process))  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))  # OTEL_BSP_* bound the queue
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on", extra={"fields": {"service": provider.resource.attributes.get("service.name")}})
    return True


def _resource(process: str) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, the SDK's own
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: process}))
    return detected


def _exporter() -> Any:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if exporter != "otlp":
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={exporter}: this image exports traces with otlp (or none)")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise TracingConfigError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc; "
                                     "this image ships http/protobuf (port 4318)") from None
        return GrpcExporter()
    if protocol != "http/protobuf":
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: use http/protobuf (or grpc)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, TLS: the OTEL_EXPORTER_OTLP_* variables


def install(provider: Any) -> None:
    """Trace with ``provider``: the library instrumentations (asyncpg, aiokafka, redis, pymongo,
    httpx) and shared/tracing.py's helpers; FastAPI traces by itself, Temporal through its
    interceptor (both from shared/tracing.py). In-process tests install an in-memory exporter
    this way, and :func:`uninstall` it after."""
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentors = [cls() for cls in (AsyncPGInstrumentor, AIOKafkaInstrumentor, RedisInstrumentor,
                                       PymongoInstrumentor, HTTPXClientInstrumentor)]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    tracing.activate(provider, instrumentors)


def uninstall() -> None:
    for instrumentor in tracing.deactivate():
        instrumentor.uninstrument()
