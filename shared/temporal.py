"""Temporal client wiring: pydantic data converter, tracing interceptor and SDK metrics.

The SDK exports its own metrics on a Prometheus endpoint bound to a private loopback
port; a collector in the process's registry reads it at each scrape, so one scrape target
per process carries both our metrics and the SDK's, in either exposition format (its
counters end with ``_total``, as OpenMetrics requires).
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import PayloadLimitsConfig

from shared.net import free_port
from shared.settings import Settings
from shared.tracing import temporal_interceptors

log = logging.getLogger("payments.temporal")
_runtime: Runtime | None = None
_sdk_metrics_address: str | None = None


class SdkMetrics(Collector):
    """The SDK's metrics, fetched from its private endpoint at each scrape."""

    def describe(self) -> Iterable[Metric]:
        return ()  # names vary with what the SDK has seen: no registration-time check

    def collect(self) -> Iterable[Metric]:
        try:
            return list(text_string_to_metric_families(sdk_metrics_text().decode()))
        except ValueError as exc:  # never fail the whole scrape for the SDK's part
            log.warning("unreadable Temporal SDK metrics: %s", exc)
            return []


def metrics_runtime() -> Runtime:
    """One Runtime per process, exporting SDK metrics (prefixed ``temporal_``)."""
    global _runtime, _sdk_metrics_address
    if _runtime is None:
        _sdk_metrics_address = f"127.0.0.1:{free_port()}"
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=_sdk_metrics_address, counters_total_suffix=True),
                metric_prefix="temporal_",
            )
        )
        REGISTRY.register(SdkMetrics())
    return _runtime


def sdk_metrics_text() -> bytes:
    """The SDK's metrics in Prometheus text format, or nothing if no runtime runs here."""
    if _sdk_metrics_address is None:
        return b""
    try:
        with urllib.request.urlopen(f"http://{_sdk_metrics_address}/metrics", timeout=2) as resp:
            return resp.read()
    except OSError:
        return b""


async def connect(settings: Settings, *, with_metrics: bool = True) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=metrics_runtime() if with_metrics else None,
        interceptors=temporal_interceptors(),  # its workers use them too
        # A group-commit batch lists its commands in its memo (~60 bytes each, up to 64
        # of them): past the SDK's 2 KiB warning, far below the server's memo limit.
        payload_limits=PayloadLimitsConfig(memo_warn_size=64 * 1024),
    )
