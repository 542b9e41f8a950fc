"""Metric names used by the Grafana dashboard and the Prometheus alert rules.

``referenced_metric_names()`` is the list a scrape test compares with what the running
processes export: names are returned as exposed by Prometheus, minus the histogram
series suffixes (``_bucket``, ``_sum``, ``_count``). Counters keep ``_total``
(prometheus_client exposes ``Counter("payments_commands")`` as ``payments_commands_total``).
Use :func:`base_name` on scraped sample names before comparing.

PromQL is not parsed by a full grammar here: string literals, label matchers, ranges,
grouping clauses and Grafana variables are removed, then every identifier that is not a
function call or a keyword is a metric name. ``{__name__=...}`` selectors are refused, so
nothing can hide from this check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "payments-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Binary operators and modifiers that read like identifiers.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def base_name(sample_name: str) -> str:
    """``payments_query_duration_seconds_bucket`` -> ``payments_query_duration_seconds``."""
    for suffix in HISTOGRAM_SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by one PromQL expression (suffixes kept)."""
    if "__name__" in expr:
        raise ValueError(f"selector on __name__ is not allowed in deploy/ queries: {expr!r}")
    text = _GRAFANA_VARIABLE.sub(" ", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e-9, 5m
            continue
        if text[match.end():].lstrip().startswith("("):  # a function or aggregation
            continue
        if token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def _dashboard_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _dashboard_panels(panel.get("panels", []))


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [
        target["expr"]
        for panel in _dashboard_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def alert_exprs(path: Path = ALERTS) -> list[str]:
    rules = yaml.safe_load(path.read_text())
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def referenced_metric_names() -> set[str]:
    """Every metric name used by the dashboard and the alert rules (see module doc)."""
    names: set[str] = set()
    for expr in dashboard_exprs() + alert_exprs():
        names |= {base_name(name) for name in promql_metric_names(expr)}
    return names
