"""A real Prometheus scraping the running system (issue 25): Debian's package, started by
the same code as ``payments up --monitoring`` (devstack/monitoring.py), with a copy of the
project's alert rules whose ``for`` is 0 s.

* every target (one per process of the process table) is up;
* every metric the Grafana dashboard and the alert rules use is in Prometheus, scraped
  (in OpenMetrics) from the running processes;
* a command's latency reaches Prometheus with an exemplar naming its trace;
* PaymentsProjectorStalled is inactive while the projector runs and fires once it stops.

Skips, saying why, where no prometheus binary is found (``.ci/run`` unpacks Debian's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import yaml

from devstack.monitoring import ALERT_RULES, Prometheus, prometheus_binary, start_prometheus
from shared.net import free_port
from shared.processes import LONG_RUNNING
from shared.settings import Settings
from tests.support.metric_names import base_name, referenced_metric_names
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.systems import IsolatedSystem, exercise_every_series, isolated_system

pytestmark = pytest.mark.skipif(
    prometheus_binary() is None,
    reason="no prometheus binary: put Debian's on PATH (.ci/run unpacks the prometheus package; "
    "`payments up --monitoring` fetches it into ~/.cache/payments-cqs)")


@pytest.fixture(scope="module")
async def system(settings: Settings, receiver: OtlpReceiver,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IsolatedSystem]:
    async with isolated_system(settings, "prometheus", tmp_path_factory.mktemp("prometheus-logs"),
                               env=receiver.env()) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(system: IsolatedSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    data = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)  # fire at the first evaluation that holds
    (data / "alerts.yml").write_text(yaml.safe_dump(rules))
    running = start_prometheus(system.settings, data / "server", port=free_port(), rule_files=[data / "alerts.yml"],
                               interval=1.0)
    yield running
    running.stop()


async def _api(prometheus: Prometheus, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = (await http.get(f"{prometheus.url}/api/v1/{path}", params=params)).json()
    assert answer["status"] == "success", answer
    return answer["data"]


async def _until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found, detail = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout:.0f}s: {detail}")
        await asyncio.sleep(0.5)


async def _stalled(prometheus: Prometheus) -> list[dict[str, Any]]:
    alerts = (await _api(prometheus, "alerts"))["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "PaymentsProjectorStalled"]


async def test_prometheus_scrapes_every_metric_of_the_running_system(
        system: IsolatedSystem, prometheus: Prometheus, receiver: OtlpReceiver) -> None:
    await exercise_every_series(system.settings, "org-prometheus")

    async def targets() -> tuple[bool, Any]:
        active = (await _api(prometheus, "targets"))["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return health == {p.name: "up" for p in LONG_RUNNING}, health

    await _until(targets, "not every process's target is up")

    async def metrics() -> tuple[bool, Any]:
        names = {base_name(n) for n in await _api(prometheus, "label/__name__/values")}
        missing = referenced_metric_names() - names
        return not missing, sorted(missing)

    await _until(metrics, "charted or alerted on, but not in Prometheus")

    async def exemplars() -> tuple[Any, Any]:
        now = time.time()
        found = await _api(prometheus, "query_exemplars", query="payments_command_duration_seconds_bucket",
                           start=now - 600, end=now)
        return [e["labels"]["trace_id"] for series in found for e in series["exemplars"]], found

    traces = await _until(exemplars, "no exemplar on the command latency")
    received = {s.trace_id for s in receiver.spans()}
    assert set(traces) & received, "the exemplars name traces the processes never exported"


async def test_the_stalled_projector_alert_fires_when_the_projector_stops(
        system: IsolatedSystem, prometheus: Prometheus) -> None:
    async def scraped() -> tuple[bool, Any]:
        found = await _api(prometheus, "query", query="payments_projector_stalled")
        return bool(found["result"]), found

    await _until(scraped, "the projector's gauge was never scraped")
    await asyncio.sleep(2)  # two evaluations with the projector running
    assert not [a for a in await _stalled(prometheus) if a["state"] == "firing"]

    await asyncio.to_thread(system.running.stop, names=["projector"])

    async def firing() -> tuple[Any, Any]:
        alerts = await _stalled(prometheus)
        return [a for a in alerts if a["state"] == "firing"], alerts

    [alert] = await _until(firing, "PaymentsProjectorStalled did not fire", timeout=30)
    assert alert["labels"]["severity"] == "critical"
