"""Temporal client wiring: pydantic data converter and SDK metrics.

The SDK exports its own metrics on a Prometheus endpoint bound to a private loopback
port; ``/metrics`` of each process appends that text (see :func:`sdk_metrics_text`) so
one scrape target per process carries both our metrics and the SDK's.
"""

from __future__ import annotations

import urllib.request

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import PayloadLimitsConfig

from shared.net import free_port
from shared.settings import Settings
from shared.tracing import temporal_interceptors

_runtime: Runtime | None = None
_sdk_metrics_address: str | None = None


def metrics_runtime() -> Runtime:
    """One Runtime per process, exporting SDK metrics (prefixed ``temporal_``)."""
    global _runtime, _sdk_metrics_address
    if _runtime is None:
        _sdk_metrics_address = f"127.0.0.1:{free_port()}"
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=_sdk_metrics_address), metric_prefix="temporal_"
            )
        )
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
