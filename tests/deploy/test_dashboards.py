"""The Grafana dashboard and the Prometheus alert rules.

Every metric they use must be a DESIGN section 8 metric (as defined in
``shared.telemetry``) or a Temporal SDK metric. The copies shipped by the Helm chart and
the Kustomize base must equal the sources in deploy/. With ``promtool`` on PATH (Debian
package ``prometheus``) the rules are also checked and unit-tested on synthetic series.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support.metric_names import (
    ALERTS,
    DASHBOARD,
    alert_exprs,
    base_name,
    dashboard_exprs,
    promql_metric_names,
    referenced_metric_names,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "payments-cqs"
GRAFANA_SCHEMA = ROOT / "deploy" / "grafana" / "schema"
OPERATIONS = ROOT / "docs" / "operations.md"

# DESIGN section 8, as Prometheus exposes them (counters with _total, histograms by base name).
DESIGN_METRICS = {
    "payments_commands_total",
    "payments_command_duration_seconds",
    "payments_outbox_backlog",
    "payments_outbox_publish_lag_seconds",
    "payments_projection_events_total",
    "payments_projection_lag_seconds",
    "payments_queries_total",
    "payments_query_duration_seconds",
    "payments_cache_errors_total",
    # issue 9 (docs/design.md section 11): dead letters by reason, projector progress
    "payments_projection_dead_letters_total",
    "payments_projector_stalled",
    "payments_projector_consecutive_failures",
    # issue 13 (docs/design.md section 11): the command intake
    "payments_intake_messages_total",
    # issue 27 (docs/webhooks.md): webhook deliveries
    "payments_webhook_deliveries_total",
    "payments_webhook_attempt_duration_seconds",
    "payments_webhook_backlog",
    "payments_webhook_oldest_pending_age_seconds",
    "payments_webhook_endpoints_disabled_total",
}
# What the dashboard must show (DESIGN section 8 and the issue): title fragments.
REQUIRED_PANELS = [
    "command rate", "command error", "command latency", "outbox backlog", "outbox publish lag",
    "projection lag", "dlq rate", "cache hit ratio", "query latency",
]
REQUIRED_ALERTS = {
    "projection lag": "payments_projection_lag_seconds",
    "outbox backlog": "payments_outbox_backlog",
    "dlq": "payments_projection_dead_letters_total",
    "projector stalled": "payments_projector_stalled",
    "command error": "payments_commands_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out += all_panels(panel.get("panels", []))
    return out


def exported_metric_names() -> set[str]:
    """Names the code's prometheus_client metrics are exposed under."""
    from prometheus_client.metrics import MetricWrapperBase

    from shared import telemetry

    names = set()
    for value in vars(telemetry).values():
        if isinstance(value, MetricWrapperBase):
            name, kind = value._name, value._type
            names.add(f"{name}_total" if kind == "counter" else name)
    return names


# --- metric names ---------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, kind) (rate(payments_query_duration_seconds_bucket'
            '{kind="search", cache=~"hit|miss"}[$__rate_interval]))) / on(kind) group_left '
            'sum(payments_queries_total offset 5m) > 1e-3 and up')
    assert promql_metric_names(expr) == {"payments_query_duration_seconds_bucket",
                                         "payments_queries_total", "up"}
    assert base_name("payments_command_duration_seconds_count") == "payments_command_duration_seconds"
    with pytest.raises(ValueError):
        promql_metric_names('{__name__=~"payments_.*"}')


def test_referenced_metrics_are_design_or_temporal_sdk_metrics() -> None:
    names = referenced_metric_names()
    unknown = {n for n in names if n not in DESIGN_METRICS and not n.startswith("temporal_")}
    assert not unknown, f"not DESIGN section 8 metrics: {sorted(unknown)}"


def test_referenced_payments_metrics_are_defined_by_the_code() -> None:
    exported = exported_metric_names()
    assert DESIGN_METRICS <= exported, f"shared.telemetry lacks {sorted(DESIGN_METRICS - exported)}"
    used = {n for n in referenced_metric_names() if n.startswith("payments_")}
    assert used <= exported


def test_dashboard_shows_every_design_metric() -> None:
    used = {base_name(n) for e in dashboard_exprs() for n in promql_metric_names(e)}
    assert DESIGN_METRICS <= used, f"not on the dashboard: {sorted(DESIGN_METRICS - used)}"
    assert any(n.startswith("temporal_") for n in used), "no Temporal SDK panel"


def test_label_values_match_the_code() -> None:
    """Label values filtered on exist: the projector's and the intake's results and the query
    cache states."""
    from services.command.entrypoints import intake_poll as intake
    from services.query import domain
    from services.webhooks.messages import AttemptOutcome

    results = {domain.Outcome.APPLIED, domain.Outcome.DUPLICATE, intake.SUCCEEDED, intake.REJECTED, intake.DEAD_LETTERED}
    text = DASHBOARD.read_text() + ALERTS.read_text()
    for value in re.findall(r'result=\\?"(\w+)\\?"', text):
        assert value in results | {"invalid"}, value
    assert re.findall(r'outcome=\\?"(\w+)\\?"', text) and all(  # commands' error, webhook outcomes
        v in {"error", *AttemptOutcome} for v in re.findall(r'outcome=\\?"(\w+)\\?"', text))
    assert set(re.findall(r'cache=\\?"(\w+)\\?"', text)) <= {"hit", "miss", "bypass"}


# --- dashboard ------------------------------------------------------------------------


def test_dashboard_structure(dashboard: dict) -> None:
    assert dashboard["uid"] == "payments-cqs" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == f"${{{variable['name']}}}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["datasource"] == panel["datasource"]


def test_dashboard_has_the_required_panels(dashboard: dict) -> None:
    titles = [p["title"].lower() for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in title for title in titles), f"no panel about {wanted!r}"


def test_latency_panels_show_p50_and_p99(dashboard: dict) -> None:
    for metric in ("payments_command_duration_seconds", "payments_query_duration_seconds"):
        exprs = [e for e in dashboard_exprs() if f"{metric}_bucket" in e]
        quantiles = {q for e in exprs for q in re.findall(r"histogram_quantile\((0\.\d+)", e)}
        assert {"0.5", "0.99"} <= quantiles, metric


def test_dashboard_is_valid_for_grafanas_own_schema(dashboard: dict) -> None:
    """Against the JSON Schema generated from @grafana/schema's Dashboard type (pinned in
    deploy/grafana/schema/package.json; ``npm ci && npm run generate`` there regenerates
    it, so the tests need no npm)."""
    schema = json.loads((GRAFANA_SCHEMA / "dashboard.schema.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(dashboard), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_grafana_schema_is_generated_from_pinned_packages() -> None:
    package = json.loads((GRAFANA_SCHEMA / "package.json").read_text())
    lock = json.loads((GRAFANA_SCHEMA / "package-lock.json").read_text())["packages"]
    for name, version in package["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version!r} is not pinned"
        assert lock[f"node_modules/{name}"]["version"] == version, f"package-lock.json disagrees on {name}"
    assert "--type Dashboard" in package["scripts"]["generate"] and "dashboard.schema.json" in package["scripts"]["generate"]


def test_latency_panels_show_exemplars(dashboard: dict) -> None:
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if re.search(r"payments_\w+_duration_seconds_bucket", target["expr"]):
                assert target.get("exemplar") is True, panel["title"]


def test_chart_ships_the_same_dashboard() -> None:
    assert (CHART / "files" / "payments-dashboard.json").read_bytes() == DASHBOARD.read_bytes(), (
        "copy deploy/grafana/payments-dashboard.json to the chart's files/")


# --- alert rules ----------------------------------------------------------------------


def test_alert_rules_structure(rules: list[dict]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), flags=re.MULTILINE)}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["labels"]["side"] in {"command", "query", "webhooks"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert (ROOT / path).exists() and anchor in anchors, f"{rule['alert']}: runbook {runbook}"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_required_alerts_exist(rules: list[dict]) -> None:
    for topic, metric in REQUIRED_ALERTS.items():
        words = topic.split()
        matching = [r for r in rules
                    if all(w in r["alert"].lower() for w in words)
                    and metric in {base_name(n) for n in promql_metric_names(str(r["expr"]))}]
        assert matching, f"no alert on {topic} using {metric}"


def test_alert_copies_are_identical() -> None:
    source = yaml.safe_load(ALERTS.read_text())
    assert (CHART / "files" / "alerts.yml").read_bytes() == ALERTS.read_bytes(), (
        "copy deploy/prometheus/alerts.yml to the chart's files/")
    rule = yaml.safe_load((ROOT / "deploy/k8s/base/prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == source, "deploy/k8s/base/prometheusrule.yaml differs from alerts.yml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return promtool


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# Unit tests of the rules on synthetic series (promtool test rules format).
RULE_TESTS = {
    "rule_files": ["alerts.yml"],
    "evaluation_interval": "1m",
    "tests": [
        {   # projection lag: warning after 5 min above 30 s, critical only above 300 s
            "interval": "1m",
            "input_series": [{"series": 'payments_projection_lag_seconds{instance="p1"}',
                              "values": "0 0 45x20"}],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "PaymentsProjectionLagHigh", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "PaymentsProjectionLagHigh",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "query"}}]},
                {"eval_time": "20m", "alertname": "PaymentsProjectionLagCritical", "exp_alerts": []},
            ],
        },
        {   # outbox backlog above 1000 for 10 min
            "interval": "1m",
            "input_series": [{"series": 'payments_outbox_backlog{instance="r1"}', "values": "5000x20"}],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "PaymentsOutboxBacklogHigh", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "PaymentsOutboxBacklogHigh",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "command"}}]},
            ],
        },
        {   # dead-lettered events: one is enough for the warning
            "interval": "1m",
            "input_series": [
                {"series": 'payments_projection_events_total{result="applied",type="created"}',
                 "values": "0+100x30"},
                {"series": 'payments_projection_events_total{result="dead_lettered",type="created"}',
                 "values": "0x10 1x20"},
                {"series": 'payments_projection_dead_letters_total{reason="refused"}', "values": "0x10 1x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "PaymentsEventsDeadLettered", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "PaymentsEventsDeadLettered",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "query"}}]},
                {"eval_time": "15m", "alertname": "PaymentsDLQRateHigh", "exp_alerts": []},
            ],
        },
        {   # a stalled projector: critical after 2 min, not on a blip
            "interval": "1m",
            "input_series": [{"series": 'payments_projector_stalled{instance="p1"}', "values": "0 1 0 1x10"}],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "PaymentsProjectorStalled", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "PaymentsProjectorStalled",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "side": "query", "instance": "p1"}}]},
            ],
        },
        {   # no projector at all (stopped: it exports nothing) is stalled too, after 2 min
            "interval": "1m",
            "input_series": [{"series": 'payments_projection_lag_seconds{instance="p1"}', "values": "0x10"}],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "PaymentsProjectorStalled", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "PaymentsProjectorStalled",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "side": "query"}}]},
            ],
        },
        {   # command errors count, business rejections do not
            "interval": "1m",
            "input_series": [
                {"series": 'payments_commands_total{type="create",outcome="success"}', "values": "0+100x30"},
                {"series": 'payments_commands_total{type="create",outcome="rejected"}', "values": "0+50x30"},
                {"series": 'payments_commands_total{type="create",outcome="error"}', "values": "0x10 0+20x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "PaymentsCommandErrorRateHigh", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "PaymentsCommandErrorRateHigh",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "side": "command"}}]},
            ],
        },
        {   # a webhook endpoint disabled: one is enough; a delivery given up too
            "interval": "1m",
            "input_series": [
                {"series": 'payments_webhook_endpoints_disabled_total{instance="w1"}', "values": "0x10 1x10"},
                {"series": 'payments_webhook_deliveries_total{outcome="given_up"}', "values": "0x10 1x10"},
                {"series": 'payments_webhook_deliveries_total{outcome="retry"}', "values": "0+5x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "PaymentsWebhookEndpointDisabled", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "PaymentsWebhookEndpointDisabled",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "webhooks"}}]},
                {"eval_time": "5m", "alertname": "PaymentsWebhookDeliveriesGivenUp", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "PaymentsWebhookDeliveriesGivenUp",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "webhooks"}}]},
            ],
        },
        {   # the oldest pending delivery above an hour for 15 min
            "interval": "1m",
            "input_series": [{"series": 'payments_webhook_oldest_pending_age_seconds{instance="w1"}',
                              "values": "0x5 4000x30"}],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "PaymentsWebhookOldestPendingHigh", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "PaymentsWebhookOldestPendingHigh",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "side": "webhooks"}}]},
            ],
        },
    ],
}


def test_alert_rules_fire_on_synthetic_series(tmp_path: Path) -> None:
    promtool = _promtool()
    # promtool compares annotations too; these tests are about when alerts fire.
    source = yaml.safe_load(ALERTS.read_text())
    for group in source["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(source, sort_keys=False))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(RULE_TESTS, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "tests.yml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_expr_uses_a_metric() -> None:
    for expr in alert_exprs():
        assert promql_metric_names(expr), expr
