"""Kubernetes manifests: the Helm chart and the Kustomize base and staging overlay.

Rendered by real engines, offline: Helm by the Helm v4 Go engine bundled in the
``helm-python-sdk`` wheel, Kustomize by ``kustomize build`` or ``kubectl kustomize``
(kubectl embeds kustomize). Every object is validated in strict mode against the
Kubernetes OpenAPI schemas of one fixed version (``kubernetes-validate``); the two
Prometheus Operator kinds, which those schemas do not know, against the JSON schemas
below. Then the objects are checked against each other and against the code: commands,
ports, settings, secrets, selectors, probes.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.processes import LONG_RUNNING
from tests.support.deployment import (
    PROCESSES,
    SECRET_FIELDS,
    command_settings_env_names,
    settings_env_names,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "payments-cqs"
KUSTOMIZE_BASE = ROOT / "deploy" / "k8s" / "base"
KUSTOMIZE_STAGING = ROOT / "deploy" / "k8s" / "overlays" / "staging"
KUBERNETES_VERSION = "1.31.0"
RELEASE = "payments-cqs"

# kubernetes-validate re-reads and re-parses its JSON schemas (several MB of definitions)
# on every call; the files never change during a run, so read each one once.
if not hasattr(kubernetes_validate.utils.schema_contents, "cache_info"):
    kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
        kubernetes_validate.utils.schema_contents)

# --- schemas of the custom resources (subset of the Prometheus Operator CRDs) --------------

_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object", "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"}, "labels": _STRING_MAP, "annotations": _STRING_MAP,
    },
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
CRD_SCHEMAS: dict[tuple[str, str], dict] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {"type": "object", "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}}},
                        "additionalProperties": False},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION, "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                        },
                        "additionalProperties": False}},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["groups"],
                "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["expr"],
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                            "properties": {
                                "alert": {"type": "string"}, "record": {"type": "string"},
                                "expr": {"type": ["string", "integer"]}, "for": _DURATION,
                                "keep_firing_for": _DURATION,
                                "labels": _STRING_MAP, "annotations": _STRING_MAP,
                            },
                            "additionalProperties": False}},
                    },
                    "additionalProperties": False}}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}

# --- rendering ----------------------------------------------------------------------------


def load_docs(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render_helm(values: dict | None = None, *, release: str = RELEASE,
                namespace: str = "payments") -> list[dict]:
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    finally:
        chart.close()
    docs: list[dict] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += load_docs(text)
    return docs


def staging_values() -> dict:
    return yaml.safe_load((CHART / "values-staging.yaml").read_text())


def kustomize_engine() -> list[str]:
    if binary := shutil.which("kustomize"):
        return [binary, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    pytest.skip("neither kustomize nor kubectl (which embeds kustomize) is installed")


def render_kustomize(path: Path) -> list[dict]:
    result = subprocess.run([*kustomize_engine(), str(path)], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return load_docs(result.stdout)


RENDERS = {
    "helm-default": lambda: render_helm(),
    "helm-staging": lambda: render_helm(staging_values(), namespace="payments-staging"),
    "kustomize-base": lambda: render_kustomize(KUSTOMIZE_BASE),
    "kustomize-staging": lambda: render_kustomize(KUSTOMIZE_STAGING),
}
_cache: dict[str, list[dict]] = {}


@pytest.fixture(params=list(RENDERS))
def manifests(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    name = request.param
    if name not in _cache:
        _cache[name] = RENDERS[name]()
    return name, copy.deepcopy(_cache[name])


# --- helpers ------------------------------------------------------------------------------


def validation_errors(doc: dict) -> list[str]:
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[key])
        return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{where}: {'/'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{where}: no schema for {key} in Kubernetes {KUBERNETES_VERSION}: {error}"]
    return []


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    if not all(labels.get(k) == v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        ok = {"In": present and value in expr.get("values", []),
              "NotIn": not present or value not in expr.get("values", []),
              "Exists": present, "DoesNotExist": not present}[expr["operator"]]
        if not ok:
            return False
    return bool(match or selector.get("matchExpressions"))


def deployment_of(docs: list[dict], process: str) -> dict:
    found = [d for d in of_kind(docs, "Deployment")
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == process]
    assert len(found) == 1, f"{len(found)} Deployments for {process}"
    return found[0]


def container_env(docs: list[dict], container: dict) -> dict[str, str | tuple[str, str]]:
    """Environment of a container: literal values, or (secret name, key) references."""
    env: dict[str, str | tuple[str, str]] = {}
    configmaps = by_name(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom references missing ConfigMap {name}"
        env.update(configmaps[name]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = (ref["name"], ref["key"])
    return env


def secret_keys(docs: list[dict], name: str) -> set[str] | None:
    secret = by_name(docs, "Secret").get(name)
    if secret is None:
        return None
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


EXTERNAL_SECRET = "payments-secrets"  # provided outside git in staging (docs/operations.md)
SECRET_ENV = {"PAYMENTS_DATABASE_URL", "PAYMENTS_MONGO_URL", "PAYMENTS_REDIS_URL", "PAYMENTS_JWT_SECRET",
              "PAYMENTS_CONSISTENCY_TOKEN_SECRET", "PAYMENTS_WEBHOOKS_SECRET_KEY"}


def check_secret_ref(render: str, docs: list[dict], ref: tuple[str, str]) -> None:
    name, key = ref
    keys = secret_keys(docs, name)
    if keys is None:
        assert render.endswith("staging") and name == EXTERNAL_SECRET, (
            f"{render}: reference to Secret {name} that is neither rendered nor the external one")
        assert key in SECRET_ENV
    else:
        assert key in keys, f"{render}: Secret {name} has no key {key}"


# --- tests on every render ------------------------------------------------------------------


def test_every_object_validates(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    assert docs
    errors = [error for doc in docs for error in validation_errors(doc)]
    assert not errors, f"{render}:\n" + "\n".join(errors)


def test_only_known_custom_resources(manifests: tuple[str, list[dict]]) -> None:
    _render, docs = manifests
    custom = {(d["apiVersion"], d["kind"]) for d in docs if "coreos" in d["apiVersion"]}
    assert custom <= set(CRD_SCHEMAS)


def test_names_and_labels_are_valid(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    label = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    seen = set()
    for doc in docs:
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"{render}: duplicate {key}"
        seen.add(key)
        assert len(meta["name"]) <= (63 if doc["kind"] in {"Service", "Deployment"} else 253)
        assert dns_label.match(meta["name"]), meta["name"]
        for value in meta.get("labels", {}).values():
            assert len(value) <= 63 and label.match(value), f"{render}: label value {value!r}"


def test_one_deployment_per_process(manifests: tuple[str, list[dict]]) -> None:
    _render, docs = manifests
    components = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                  for d in of_kind(docs, "Deployment")}
    assert components == set(PROCESSES)


def test_deployments_run_their_process_with_probes_and_limits(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    images = set()
    for process in PROCESSES:
        deployment = deployment_of(docs, process)
        pod = deployment["spec"]["template"]["spec"]
        assert selects(deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
        [container] = pod["containers"]
        images.add(container["image"])
        assert container.get("command") is None, "the image's ENTRYPOINT is `payments`"
        assert container["args"] == [process]
        [port] = container["ports"]
        assert port["name"] == "http"
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, (process, probe)
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in ("/tmp", "/var/lib/payments"):
            assert "emptyDir" in volumes[mounts[path]], f"{process}: {path} is not writable"
    assert len(images) == 1, f"{render}: processes run different images {images}"


def test_processes_get_the_settings_they_need(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    fields = settings_env_names()
    command_fields = fields | command_settings_env_names()
    for process, spec in PROCESSES.items():
        [container] = deployment_of(docs, process)["spec"]["template"]["spec"]["containers"]
        env = container_env(docs, container)
        allowed = command_fields if spec["side"] == "command" else fields
        unknown = set(env) - set(allowed)
        assert not unknown, f"{render}/{process}: {sorted(unknown)} are not settings"
        got = {allowed[name] for name in env}
        assert spec["needs"] <= got, f"{render}/{process} lacks {sorted(spec['needs'] - got)}"
        secrets = {allowed[name] for name, value in env.items() if isinstance(value, tuple)}
        assert secrets == got & SECRET_FIELDS, f"{render}/{process}: a secret is set in clear"
        assert not (secrets - spec["needs"]), f"{render}/{process} gets secrets it does not use"
        for value in env.values():
            if isinstance(value, tuple):
                check_secret_ref(render, docs, value)
        assert env["PAYMENTS_HOST"] == "0.0.0.0"
        port_var = next(n for n, f in fields.items() if f == spec["port_field"])
        assert int(env[port_var]) == container["ports"][0]["containerPort"], (
            f"{render}/{process}: listens on {env[port_var]}, declares another port")


def test_services_hpas_pdbs_and_service_monitors(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    services, hpas = of_kind(docs, "Service"), of_kind(docs, "HorizontalPodAutoscaler")
    pdbs, monitors = of_kind(docs, "PodDisruptionBudget"), of_kind(docs, "ServiceMonitor")
    for process in PROCESSES:
        deployment = deployment_of(docs, process)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        [service] = [s for s in services if selects({"matchLabels": s["spec"]["selector"]}, pod_labels)]
        [port] = service["spec"]["ports"]
        assert port["name"] == "http" and port["targetPort"] == "http"
        [monitor] = [m for m in monitors if selects(m["spec"]["selector"], service["metadata"]["labels"])]
        assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
        [pdb] = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels)]
        assert ("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"])
        targets = [h for h in hpas if h["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}]
        if render == "helm-staging" and process == "relay":
            assert not targets and deployment["spec"]["replicas"] == 1  # fixed in staging
            continue
        [hpa] = targets
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"], "an HPA needs at least one metric"
        if render.startswith("helm"):
            assert "replicas" not in deployment["spec"], "the HPA owns replicas"


def test_network_policies(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    policies = of_kind(docs, "NetworkPolicy")
    pods = {p: deployment_of(docs, p)["spec"]["template"]["metadata"]["labels"] for p in PROCESSES}
    deny = [p for p in policies if not p["spec"].get("ingress") and "Ingress" in p["spec"]["policyTypes"]]
    assert deny and all(any(selects(d["spec"]["podSelector"], labels) for d in deny)
                        for labels in pods.values()), "no default-deny ingress for every pod"

    def allowed_ports(labels: dict) -> set[str]:
        return {str(port["port"]) for p in policies if selects(p["spec"]["podSelector"], labels)
                for rule in p["spec"].get("ingress", []) for port in rule.get("ports", [])}

    for process, labels in pods.items():
        assert "http" in allowed_ports(labels), f"{render}: /metrics of {process} unreachable"
    for api in (p.name for p in LONG_RUNNING if p.api):
        assert any(selects(p["spec"]["podSelector"], pods[api]) and
                   any(not rule.get("from") or rule["from"] for rule in p["spec"].get("ingress", []))
                   for p in policies)


# The sides whose processes use the PostgreSQL schema (the webhooks' tables live beside the payments).
MIGRATED_SIDES = ("command", "webhooks")


def test_migrations_run_before_the_command_side(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    [job] = [j for j in of_kind(docs, "Job")
             if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = container_env(docs, container)
    assert isinstance(env["PAYMENTS_DATABASE_URL"], tuple)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    if render.startswith("helm"):
        hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
        assert hooks == {"pre-install", "pre-upgrade"}
        name, key = env["PAYMENTS_DATABASE_URL"]
        secret = by_name(docs, "Secret").get(name)
        if secret is not None:  # a hook Secret created before the Job
            annotations = secret["metadata"]["annotations"]
            assert set(annotations["helm.sh/hook"].split(",")) == hooks
            assert int(annotations["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
        check_secret_ref(render, docs, (name, key))
    else:
        for process, spec in PROCESSES.items():
            init = deployment_of(docs, process)["spec"]["template"]["spec"].get("initContainers", [])
            if spec["side"] in MIGRATED_SIDES:
                assert [c["args"] for c in init] == [["migrate"]], f"{process} does not wait for migrations"
                check_secret_ref(render, docs, container_env(docs, init[0])["PAYMENTS_DATABASE_URL"])
            else:
                assert not init


def test_alerts_and_dashboard_are_deployed(manifests: tuple[str, list[dict]]) -> None:
    render, docs = manifests
    source = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    [rule] = of_kind(docs, "PrometheusRule")
    assert rule["spec"] == source
    if render.startswith("helm"):
        dashboards = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
        [dashboard] = dashboards
        assert dashboard["data"]["payments-dashboard.json"] == (
            ROOT / "deploy/grafana/payments-dashboard.json").read_text().rstrip("\n")


# --- staging ------------------------------------------------------------------------------


@pytest.mark.parametrize("render", ["helm-staging", "kustomize-staging"])
def test_staging_differs_where_it_should(render: str) -> None:
    docs = _cache.get(render) or RENDERS[render]()
    assert not of_kind(docs, "Secret"), "staging secrets are managed outside git"
    for monitor in of_kind(docs, "ServiceMonitor") + of_kind(docs, "PrometheusRule"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    images = {c["image"] for d in of_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert all(image.startswith("registry.internal/payments/payments-cqs:") for image in images)
    config = next(c for c in of_kind(docs, "ConfigMap") if "PAYMENTS_TEMPORAL_NAMESPACE" in c["data"])
    assert config["data"]["PAYMENTS_TEMPORAL_NAMESPACE"] == "payments-staging"
    hpa = {h["spec"]["scaleTargetRef"]["name"].rsplit("-", 2)[-2] + "-" +
           h["spec"]["scaleTargetRef"]["name"].rsplit("-", 1)[-1]: h["spec"]
           for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert hpa["query-api"]["maxReplicas"] > hpa["command-api"]["maxReplicas"], (
        "the two sides scale independently: staging gives the read side more room")
    api_ingress = [p for p in of_kind(docs, "NetworkPolicy")
                   if any(r.get("from") and any("ingress-nginx" in str(f) for f in r["from"])
                          for r in p["spec"].get("ingress", []))]
    assert api_ingress, "staging APIs must only be reachable from the ingress controller"
    if render.startswith("kustomize"):
        namespaced = [d for d in docs if d["kind"] != "Namespace"]
        assert {d["metadata"].get("namespace") for d in namespaced} == {"payments-staging"}


# --- Helm chart -------------------------------------------------------------------------


def test_chart_lints_clean() -> None:
    import helm_python

    for values in ({}, staging_values()):
        report = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], report


VARIANTS = {
    "query worker disabled": {"query": {"worker": {"enabled": False}}},
    "no autoscaling": {"command": {"api": {"autoscaling": {"enabled": False}}}},
    "memory target": {"query": {"api": {"autoscaling": {"targetMemoryUtilizationPercentage": 80}}}},
    "migration initContainer": {"migrations": {"initContainer": True}},
    "existing secret": {"secrets": {"existingSecret": "vault-payments"}},
    "restricted egress": {"networkPolicy": {"egress": {"restrict": True, "rules": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]}}},
    "no prometheus operator": {"monitoring": {"serviceMonitor": {"enabled": False},
                                              "prometheusRule": {"enabled": False},
                                              "grafanaDashboard": {"enabled": False}}},
    "pdb minAvailable": {"query": {"api": {"pdb": {"minAvailable": 1}}}},
    "reconcile cronjob": {"reconcile": {"enabled": True, "repair": True, "pushgatewayUrl": "http://pushgateway:9091"}},
    "scheduling": {"nodeSelector": {"pool": "general"},
                   "query": {"projector": {"tolerations": [{"key": "dedicated", "operator": "Equal",
                                                            "value": "stream", "effect": "NoSchedule"}]}}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chart_variants_render_valid_objects(variant: str) -> None:
    docs = render_helm(VARIANTS[variant])
    errors = [error for doc in docs for error in validation_errors(doc)]
    assert not errors, "\n".join(errors)
    components = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                  for d in of_kind(docs, "Deployment")}
    if variant == "query worker disabled":
        assert components == set(PROCESSES) - {"query-worker"}
        assert not [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "query-worker"]
    elif variant == "migration initContainer":
        for process, spec in PROCESSES.items():
            init = deployment_of(docs, process)["spec"]["template"]["spec"].get("initContainers", [])
            assert [c["args"] for c in init] == ([["migrate"]] if spec["side"] in MIGRATED_SIDES else [])
    elif variant == "existing secret":
        assert not of_kind(docs, "Secret")
        refs = {v["valueFrom"]["secretKeyRef"]["name"] for d in of_kind(docs, "Deployment") + of_kind(docs, "Job")
                for c in d["spec"]["template"]["spec"]["containers"] for v in c.get("env", []) if "valueFrom" in v}
        assert refs == {"vault-payments"}
    elif variant == "no prometheus operator":
        assert not [d for d in docs if "coreos" in d["apiVersion"]]
    elif variant == "reconcile cronjob":
        [cron] = of_kind(docs, "CronJob")
        container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["reconcile", "--repair"]
        assert {e["name"] for e in container["env"]} == {"PAYMENTS_DATABASE_URL", "PAYMENTS_MONGO_URL",
                                                         "PAYMENTS_REDIS_URL", "PAYMENTS_RECONCILE_PUSHGATEWAY_URL"}
    elif variant == "no autoscaling":
        assert deployment_of(docs, "command-api")["spec"]["replicas"] == 2
        assert len(of_kind(docs, "HorizontalPodAutoscaler")) == len(PROCESSES) - 1
    elif variant == "memory target":
        [hpa] = [h for h in of_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("query-api")]
        assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    elif variant == "scheduling":
        pod = deployment_of(docs, "projector")["spec"]["template"]["spec"]
        assert pod["tolerations"][0]["key"] == "dedicated" and pod["nodeSelector"] == {"pool": "general"}


def test_long_release_names_keep_valid_object_names() -> None:
    docs = render_helm(release="payments-cqs-" + "x" * 40)  # 53: Helm's longest release name
    for doc in docs:
        limit = 63 if doc["kind"] in {"Service", "Deployment"} else 253
        assert len(doc["metadata"]["name"]) <= limit, doc["metadata"]["name"]
        for value in doc["metadata"].get("labels", {}).values():
            assert len(value) <= 63, value


def _uncommented_keys(path: Path) -> list[str]:
    """Mapping keys of a values file without a comment just above them or on their line."""
    lines = path.read_text().splitlines()
    missing, list_indent = [], None
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if list_indent is not None and indent > list_indent:
            continue  # inside a list item: example data, not a key of the chart
        list_indent = None
        if line.lstrip().startswith("- "):
            list_indent = indent
            continue
        match = re.match(r"^\s*([A-Za-z_][\w.-]*):", line)
        if not match or " # " in line:
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        previous = lines[j] if j >= 0 else ""
        if not (previous.lstrip().startswith("#") and len(previous) - len(previous.lstrip()) == indent):
            missing.append(f"{path.name}:{i + 1}: {match.group(1)}")
    return missing


@pytest.mark.parametrize("name", ["values.yaml", "values-staging.yaml"])
def test_values_are_documented(name: str) -> None:
    missing = _uncommented_keys(CHART / name)
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


def test_staging_values_only_set_existing_keys() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(override: dict, base: dict, path: str) -> None:
        for key, value in override.items():
            assert key in base, f"values-staging.yaml sets unknown key {path}{key}"
            if isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
                walk(value, base[key], f"{path}{key}.")

    walk(staging_values(), defaults, "")


def test_tracing_values_become_the_standard_otel_variables() -> None:
    """No endpoint, no OTEL_* at all (the processes install nothing); with one, every
    process gets the endpoint, the sampler and the resource attributes."""
    def config(values: dict) -> dict[str, str]:
        return next(c for c in of_kind(render_helm(values), "ConfigMap") if "PAYMENTS_HOST" in c["data"])["data"]

    assert not [k for k in config({}) if k.startswith("OTEL_")]
    data = config({"tracing": {"otlpEndpoint": "http://otel-collector.observability:4318",
                               "resourceAttributes": "deployment.environment=staging"}})
    assert {k: v for k, v in data.items() if k.startswith("OTEL_")} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging"}


def test_every_process_is_configurable_per_side() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    fields = settings_env_names()
    # The chart's values key of each process, under its side (command:, query: or webhooks:).
    keys = {"command-api": "api", "command-worker": "worker", "relay": "relay", "intake": "intake",
            "query-api": "api", "projector": "projector", "query-worker": "worker", "webhooks": "deliveries"}
    assert set(keys) == set(PROCESSES)
    for process, key in keys.items():
        cfg = values[PROCESSES[process]["side"]][key]
        assert {"enabled", "port", "replicas", "resources", "autoscaling", "pdb"} <= set(cfg)
        default_port = next(f for f in fields.values() if f == PROCESSES[process]["port_field"])
        from shared.settings import Settings

        assert cfg["port"] == Settings.model_fields[default_port].default


# --- docs -------------------------------------------------------------------------------


def test_operations_guide_covers_deploy_scale_watch_rebuild() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for needle in ("docker compose", "--profile monitoring", "kubectl apply -k deploy/k8s/overlays/staging",
                   "helm upgrade --install", "values-staging.yaml", "payments migrate",
                   "payments replay", "autoscaling", "Grafana", "alerts.yml"):
        assert needle in text, f"docs/operations.md does not mention {needle!r}"
    for process in PROCESSES:
        assert f"payments {process}" in text


def test_helm_creates_durable_topics_before_the_processes_and_only_when_asked() -> None:
    docs = render_helm()
    jobs = [j for j in of_kind(docs, "Job") if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["topics"]]
    assert len(jobs) == 1, "one hook Job runs `payments topics`"
    job = jobs[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    env = container_env(docs, job["spec"]["template"]["spec"]["containers"][0])
    # A real cluster loses no event when one broker is lost: RF 3, min ISR 2.
    assert env["PAYMENTS_KAFKA_TOPIC_REPLICATION_FACTOR"] == "3"
    assert env["PAYMENTS_KAFKA_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    assert int(env["PAYMENTS_EVENTS_TOPIC_PARTITIONS"]) >= 1
    for d in of_kind(docs, "Deployment"):  # the processes never create topics there
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert container_env(docs, c).get("PAYMENTS_KAFKA_CREATE_TOPICS", "false") == "false"
    assert not [j for j in of_kind(render_helm({"kafkaTopics": {"create": False}}), "Job")
                if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["topics"]]
