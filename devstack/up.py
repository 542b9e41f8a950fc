"""``payments up`` (the whole system on the embedded stack) and ``payments demo``."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from devstack import DEFAULT_DATA_DIR, LocalStack, port_is_free
from devstack.brokers import KAFKA_BROKERS
from devstack.demo_lifecycle import create_expiring, refunded_twice, show_expired
from devstack.demo_webhooks import wait_for, webhook_demo
from devstack.foreground import fail, run_in_foreground, start_or_fail
from devstack.monitoring import DEFAULT_PORT, MonitoringError, Prometheus, prometheus_binary, start_prometheus
from devstack.system import ProcessStartError, RunningSystem, base_url, port_of
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.money import format_money
from shared.processes import LONG_RUNNING
from shared.settings import Settings


def _print_urls(settings: Settings, token: str, log_dir: Path, seconds: float, prometheus: Prometheus | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title="payments-cqs is running", title_justify="left")
    table.add_column("what")
    table.add_column("URL", overflow="fold")
    command = f"http://{settings.host}:{settings.command_api_port}"
    query = f"http://{settings.host}:{settings.query_api_port}"
    table.add_row("Command API", f"{command}/v1/payments")
    table.add_row("Command API docs", f"{command}/docs  (OpenAPI: {command}/openapi.json)")
    table.add_row("Query API", f"{query}/v1/payments")
    table.add_row("Query API docs", f"{query}/docs  (OpenAPI: {query}/openapi.json)")
    table.add_row("Temporal UI", settings.temporal_ui_url or "(headless)")
    if prometheus is not None:
        table.add_row("Prometheus", f"{prometheus.url}  (targets: {prometheus.url}/targets, alerts: {prometheus.url}/alerts)")
    for process in LONG_RUNNING:
        table.add_row(f"metrics: {process.name}", f"{base_url(process, settings)}/metrics")
    console.print(table)
    console.print(f"ready in {seconds:.1f}s; logs in {log_dir}/")
    console.print("token for organization 'demo-org' (payments:read payments:write), and a first payment:")
    for line in try_lines(command, token):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def try_lines(command_url: str, token: str) -> list[str]:
    """Lines to paste into a shell: set TOKEN, create a payment, run the demo (with this
    venv's ``payments``, which need not be on PATH)."""
    payments = Path(sys.executable).parent / "payments"
    return [
        f"export TOKEN='{token}'",
        'curl -s -H "Authorization: Bearer $TOKEN" -H "content-type: application/json" '
        f"-d '{{\"amount\": 1250, \"currency\": \"EUR\"}}' {command_url}/v1/payments",
        f"or: {payments} demo        (Ctrl-C here stops everything)",
    ]


def up(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", envvar="PAYMENTS_DATA_DIR",
                                  help="Stack data, endpoints file and logs."),
    persist: bool = typer.Option(False, "--persist", help="Keep Temporal/MongoDB/PostgreSQL data across runs."),
    headless: bool = typer.Option(False, "--headless", help="Do not start the Temporal web UI."),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for servers and processes."),
    monitoring: bool = typer.Option(False, "--monitoring", envvar="PAYMENTS_MONITORING",
                                    help="Also run Prometheus (Debian's package, fetched once if not on PATH) "
                                    "scraping every process, with the project's alert rules."),
    prometheus_port: int = typer.Option(DEFAULT_PORT, "--prometheus-port", envvar="PAYMENTS_PROMETHEUS_PORT",
                                        help="Prometheus's port with --monitoring."),
) -> None:
    """Start the local stack and every process of the system; print URLs and a token; Ctrl-C stops all.

    PostgreSQL, Redis, Kafka, MongoDB and Temporal come from PAYMENTS_DATABASE_URL,
    PAYMENTS_REDIS_URL, PAYMENTS_KAFKA_BOOTSTRAP, PAYMENTS_MONGO_URL and
    PAYMENTS_TEMPORAL_ADDRESS when set (checked for reachability), embedded otherwise;
    PAYMENTS_STACK_KAFKA picks the Kafka to start (noida, the default; apache; tansu).
    API ports: PAYMENTS_COMMAND_API_PORT (8001), PAYMENTS_QUERY_API_PORT (8002).
    """
    data_dir = data_dir.absolute()
    base = Settings()
    taken = [f"{p.name} port {port_of(p, base)}" for p in LONG_RUNNING if not port_is_free(port_of(p, base), base.host)]
    if monitoring and not port_is_free(prometheus_port, "127.0.0.1"):
        taken.append(f"prometheus port {prometheus_port}")
    if taken:
        raise fail(f"{', '.join(taken)} already in use: stop what uses it or set PAYMENTS_<NAME>_PORT")
    binary = _prometheus_or_fail() if monitoring else None
    started = time.monotonic()
    servers = ("database_url", "redis_url", "kafka_bootstrap", "mongo_url", "temporal_address")
    stack = LocalStack(
        data_dir, persist=persist, headless=headless, ready_timeout=timeout,
        kafka_broker=os.environ.get("PAYMENTS_STACK_KAFKA") or KAFKA_BROKERS[0],
        **{name: os.environ.get(f"PAYMENTS_{name.upper()}") for name in servers},
    )
    system: RunningSystem | None = None
    prometheus: Prometheus | None = None

    def serve() -> int:
        nonlocal system, prometheus
        endpoints = start_or_fail(stack)
        typer.echo(f"stack ready in {stack.startup_seconds or 0:.1f}s; starting the {len(LONG_RUNNING)} processes…",
                   err=True)
        # Webhooks to local receivers (`payments demo`'s): loopback only, refused beyond it.
        env = {"PAYMENTS_WEBHOOKS_ALLOW_PRIVATE": "true", **os.environ, **endpoints.as_env(),
               "PAYMENTS_DATA_DIR": str(data_dir)}
        settings = Settings(**{k: v for k, v in endpoints.as_settings().items() if v is not None})
        system = RunningSystem(settings, data_dir / "logs", static_members=stack.static_members)
        try:
            system.start(env, timeout=timeout)
        except ProcessStartError as exc:
            raise fail(str(exc)) from None
        if binary is not None:
            try:
                prometheus = start_prometheus(settings, data_dir / "prometheus", port=prometheus_port, binary=binary)
            except MonitoringError as exc:
                raise fail(str(exc)) from None
        token = mint_token("demo-org", [SCOPE_READ, SCOPE_WRITE], settings=settings, subject="demo-user")
        _print_urls(settings, token, system.log_dir, time.monotonic() - started, prometheus)
        return _watch(stack, system, prometheus)

    def stop() -> None:
        typer.echo("stopping…", err=True)
        if prometheus is not None:
            prometheus.stop()
        if system is not None:
            system.stop()
        stack.stop()

    run_in_foreground(serve, stop)


def _prometheus_or_fail() -> Path:
    try:
        binary = prometheus_binary()
        if binary is None:
            typer.echo("fetching Debian's prometheus package (once: apt-get download, dpkg-deb -x)…", err=True)
            binary = prometheus_binary(fetch=True)
    except (MonitoringError, OSError, subprocess.CalledProcessError) as exc:
        raise fail(f"--monitoring: {exc}") from None
    assert binary is not None
    return binary


def _watch(stack: LocalStack, system: RunningSystem, prometheus: Prometheus | None = None) -> int:
    """Block until a process (or Prometheus) exits (exit code 1); signals raise Interrupted.
    A server that exits is reported, and can be started again alone."""
    reported: set[str] = set()
    while True:
        time.sleep(0.5)
        if prometheus is not None and prometheus.process.poll() is not None:
            typer.secho(f"error: prometheus exited; see {prometheus.log}; stopping", fg="red", err=True)
            return 1
        for name, child in system.children.items():
            if child.poll() is not None:
                typer.secho(f"error: {name} exited with code {child.returncode}; see "
                            f"{system.log_dir / (name + '.log')}; stopping", fg="red", err=True)
                return 1
        for line in stack.serve_server_actions():  # payments stack start|stop|restart NAME
            typer.echo(line, err=True)
        crashed = {n: rc for n, rc in stack.exited().items() if n not in reported}
        if crashed:  # the processes reconnect once it is back: payments stack start NAME
            reported.update(crashed)
            typer.secho(f"warning: server(s) exited: {crashed}; restart with: payments stack start NAME",
                        fg="yellow", err=True)
        reported &= set(stack.exited())


DEMO_ORGS = ("acme", "globex", "initech")
DEMO_CURRENCIES = ("EUR", "USD", "JPY", "GBP", "BHD")
DEMO_ITEMS = ("compute hours", "object storage", "egress traffic", "managed database", "support plan")


def demo(
    payments_per_org: int = typer.Option(20, "--count", "-n", min=1, max=1000, help="Payments per organization."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same demo)."),
) -> None:
    """Create realistic payments across several organizations through the command API,
    then show search results and statistics from the query API (reads wait for the
    projection with min_version, so what you see is what was written), the webhooks the
    first organization's endpoint, on a receiver of this process, got; one payment of the
    first organization has a deadline a few seconds ahead, and expires."""
    settings = Settings()
    rng = random.Random(seed)
    command = f"http://{settings.host}:{settings.command_api_port}"
    query = f"http://{settings.host}:{settings.query_api_port}"
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    last: dict[str, tuple[str, int]] = {}
    events: dict[str, int] = dict.fromkeys(DEMO_ORGS, 0)  # each organization's events
    try:
        with webhook_demo(command, settings, DEMO_ORGS[0]) as hooks, httpx.Client(timeout=30) as http, \
                Progress(console=console) as progress:
            first = {"Authorization": "Bearer " + mint_token(DEMO_ORGS[0], [SCOPE_READ, SCOPE_WRITE], settings=settings)}
            expiring = create_expiring(http, command, first)
            events[DEMO_ORGS[0]] += 1  # its created event reaches the first organization's endpoint
            task = progress.add_task("creating payments", total=payments_per_org * len(DEMO_ORGS))
            for org in DEMO_ORGS:
                auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=settings)}
                for i in range(payments_per_org):
                    currency = rng.choice(DEMO_CURRENCIES)
                    amount = rng.randint(1, 5000) * (1 if currency == "JPY" else 100) + rng.randint(0, 99)
                    body = {"amount": amount, "currency": currency,
                            "description": f"{rng.choice(DEMO_ITEMS)} {org} #{i + 1}",
                            "user_id": f"{org}-user-{rng.randint(1, 5)}", "metadata": {"source": "demo"}}
                    resp = http.post(f"{command}/v1/payments", json=body, headers=auth)
                    resp.raise_for_status()
                    payment = resp.json()
                    events[org] += 1
                    action = rng.choices(["complete", "fail", "cancel", None], weights=[6, 1, 1, 2])[0]
                    if action:
                        resp = http.post(f"{command}/v1/payments/{payment['id']}/{action}", headers=auth)
                        resp.raise_for_status()
                        payment = resp.json()
                        events[org] += 1
                    last[org] = (payment["id"], payment["version"])
                    progress.advance(task)
            refunded = refunded_twice(http, command, DEMO_ORGS[0], settings)
            last[DEMO_ORGS[0]] = (refunded["id"], refunded["version"])
            events[DEMO_ORGS[0]] += refunded["version"]  # one event per version
            for org in DEMO_ORGS:
                auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ], settings=settings)}
                payment_id, version = last[org]
                http.get(f"{query}/v1/payments/{payment_id}", params={"min_version": version},
                         headers=auth).raise_for_status()
                stats = http.get(f"{query}/v1/statistics", headers=auth).json()
                # Amounts are comparable only within a currency: the top 3 of each.
                table = Table(title=f"{org}: top payments by amount, per currency ({stats['count']} in all)",
                              title_justify="left")
                for col in ("currency", "id", "amount", "status", "description"):
                    table.add_column(col)
                for c in stats["currencies"]:
                    found = http.get(f"{query}/v1/payments", params={"sort": "-amount", "limit": 3,
                                     "currency": c["currency"]}, headers=auth).json()
                    for p in found["data"]:
                        table.add_row(c["currency"], p["id"][:8], p["formatted_amount"], p["status"], p["description"])
                console.print(table)
                st = Table(title=f"{org}: statistics by currency", title_justify="left")
                for col in ("currency", "count", "sum", "avg", "min", "max", "refunded", "net"):
                    st.add_column(col)
                for c in stats["currencies"]:
                    cur = c["currency"]
                    st.add_row(cur, str(c["count"]), *(format_money(c[k], cur)
                                                       for k in ("sum", "avg", "min", "max", "refunded", "net")))
                console.print(st)
                if org == DEMO_ORGS[0]:
                    shown = http.get(f"{query}/v1/payments/{refunded['id']}", headers=auth).json()
                    parts = ", ".join(f"{format_money(r['amount'], shown['currency'])} ({r['reason']})"
                                      for r in shown["refunds"])
                    console.print(f"partly refunded twice: {shown['id'][:8]} {shown['formatted_amount']} "
                                  f"{shown['status']}, refunds {parts}")
                console.print(f"by status: {stats['by_status']}")
            # The first organization's endpoint on a receiver in this process (docs/webhooks.md).
            console.print(f"webhooks of {DEMO_ORGS[0]}: {hooks.note or wait_for(hooks, events[DEMO_ORGS[0]])}")
            show_expired(http, query, first, expiring, console)
    except httpx.HTTPStatusError as exc:
        raise fail(f"{exc.request.method} {exc.request.url} answered {exc.response.status_code}: "
                    f"{exc.response.text[:300]}") from None
    except httpx.TransportError as exc:
        raise fail(f"cannot reach the APIs ({exc}); is 'payments up' running?") from None


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("demo")(demo)
