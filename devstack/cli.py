"""``payments stack``: run the embedded local stack (registered by services/cli.py).

Also runnable on its own, with the same arguments: ``python -m devstack.cli
stack up`` (this is how ``stack up --detach`` starts its background process, so that it
does not depend on the rest of the ``payments`` command importing).
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

import devstack
from devstack import DEFAULT_DATA_DIR, STACK_FILE_NAME, Endpoints, LocalStack, StackError
from devstack.background import SERVER_ACTIONS, request_server_action, start_background
from devstack.brokers import KAFKA_BROKERS
from devstack.endpoints import PORT_NAMES, SERVICES
from devstack.foreground import fail, run_in_foreground, start_or_fail

stack_app = typer.Typer(
    name="stack",
    help=(
        "The embedded local stack: Temporal dev server, Kafka (noida-db; Apache Kafka with --kafka apache, "
        "Tansu with --kafka tansu), "
        "MongoDB (SecantusDB), "
        "PostgreSQL and Redis (Valkey) on 127.0.0.1, all from the project's 'local' extra. "
        "Endpoints are written to <data-dir>/stack.json, where "
        "every other payments command finds them."
    ),
    no_args_is_help=True,
    add_completion=False,
)

DataDirOption = typer.Option(
    DEFAULT_DATA_DIR,
    "--data-dir",
    envvar="PAYMENTS_DATA_DIR",
    help="Directory for stack.json, logs/ and (with --persist) the servers' data.",
    show_default=True,
)


# The fixed-port options of `stack up`, by LocalStack port name: (option, help).
PORT_OPTIONS: dict[str, tuple[str, str]] = {
    "temporal": ("--temporal-port", "Fixed Temporal gRPC port (default: a free one)."),
    "temporal_ui": ("--ui-port", "Fixed Temporal UI port (default: a free one)."),
    "kafka": ("--kafka-port", "Fixed Kafka port (default: a free one)."),
    "mongo": ("--mongo-port", "Fixed MongoDB port, below 32768 (default: a free one)."),
    "postgres": ("--postgres-port", "Fixed PostgreSQL port (default: a free one)."),
    "redis": ("--redis-port", "Fixed Redis port (default: a free one)."),
}
assert tuple(PORT_OPTIONS) == PORT_NAMES, "one option per port LocalStack accepts"


def _with_port_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one ``--NAME-port`` option per PORT_OPTIONS entry (before its last
    parameter); it receives them as keyword arguments ``<name>_port``."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    ports = [inspect.Parameter(f"{name}_port", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int,
                               default=typer.Option(None, flag, help=text))
             for name, (flag, text) in PORT_OPTIONS.items()]
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*params[:-1], *ports, params[-1]])
    return command


def _console():  # rich is imported lazily: --help stays fast
    from rich.console import Console

    # Not a terminal (CI, a pipe): do not wrap URLs at 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_endpoints(ep: Endpoints, data_dir: Path, seconds: float | None, logs_dir: Path) -> None:
    from rich.table import Table

    table = Table(title="payments local stack", title_justify="left")
    table.add_column("service")
    table.add_column("endpoint", overflow="fold")
    table.add_column("setting (PAYMENTS_…)")
    table.add_column("pid", justify="right")
    rows = [
        ("Temporal", ep.temporal_address, "TEMPORAL_ADDRESS", "temporal"),
        ("Temporal namespace", ep.temporal_namespace, "TEMPORAL_NAMESPACE", None),
        ("Temporal UI", ep.temporal_ui_url or "(headless)", "TEMPORAL_UI_URL", None),
        ("Kafka", ep.kafka_bootstrap, "KAFKA_BOOTSTRAP", "kafka"),
        ("MongoDB", ep.mongo_url, "MONGO_URL", "mongo"),
        ("PostgreSQL", devstack.redact(ep.database_url), "DATABASE_URL", "postgres"),
        ("Redis", ep.redis_url, "REDIS_URL", "redis"),
    ]
    for name, endpoint, env, key in rows:
        pid = ep.pids.get(key) if key else None
        table.add_row(name, endpoint, env, str(pid) if pid else "external" if key else "")
    console = _console()
    console.print(table)
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    console.print(
        f"ready{took}; endpoints in {data_dir / STACK_FILE_NAME}, logs in {logs_dir}/"
    )


@stack_app.command("up")
@_with_port_options
def up(
    data_dir: Path = DataDirOption,
    persist: bool = typer.Option(
        False, "--persist", help="Keep Temporal, MongoDB, PostgreSQL and Kafka data in "
        "--data-dir across restarts (but with --kafka tansu: Tansu is memory-only)."),
    kafka: str = typer.Option(
        KAFKA_BROKERS[0], "--kafka", envvar="PAYMENTS_STACK_KAFKA",
        help=f"The Kafka broker to start: {', '.join(KAFKA_BROKERS)}. apache is Apache Kafka from Maven Central "
             "(needs java 17+ and mvn; the jars are resolved into ~/.m2 the first time); docs/design.md section 11."),
    kafka_bootstrap: str = typer.Option(
        None, "--kafka-bootstrap", envvar="PAYMENTS_KAFKA_BOOTSTRAP",
        help="Use this Kafka instead of starting one (its topics are its deployment's)."),
    mongo_url: str = typer.Option(
        None, "--mongo-url", envvar="PAYMENTS_MONGO_URL", help="Use this MongoDB instead of starting SecantusDB."),
    temporal_address: str = typer.Option(
        None, "--temporal-address", envvar="PAYMENTS_TEMPORAL_ADDRESS",
        help="Use this Temporal frontend instead of starting the dev server."),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Run in the background; return once every server answers."),
    headless: bool = typer.Option(False, "--headless", help="Do not start the Temporal web UI."),
    database_url: str = typer.Option(
        None, "--database-url", envvar="PAYMENTS_DATABASE_URL",
        help="Use this PostgreSQL instead of starting the embedded one."),
    redis_url: str = typer.Option(
        None, "--redis-url", envvar="PAYMENTS_REDIS_URL", help="Use this Redis instead of starting the embedded Valkey."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the servers to answer."),
    **port_options: Any,
) -> None:
    """Start the local stack and print its endpoints.

    In the foreground (default) it runs until Ctrl-C or SIGTERM, then stops every
    server. With --detach it keeps running in the background: stop it with
    'payments stack down'.
    """
    data_dir = data_dir.absolute()
    ports = {name: port_options[f"{name}_port"] for name in PORT_OPTIONS if port_options.get(f"{name}_port")}
    servers = {
        "database_url": database_url,
        "redis_url": redis_url,
        "kafka_bootstrap": kafka_bootstrap,
        "mongo_url": mongo_url,
        "temporal_address": temporal_address,
    }
    if detach:
        args = ["--timeout", str(timeout), "--kafka", kafka]
        args += ["--persist"] * persist + ["--headless"] * headless
        args += [arg for key, value in servers.items() if value for arg in ("--" + key.replace("_", "-"), value)]
        args += [arg for name, port in ports.items() for arg in (PORT_OPTIONS[name][0], str(port))]
        _up_detached(data_dir, args, timeout)
        return
    stack = LocalStack(data_dir, persist=persist, headless=headless, ports=ports, ready_timeout=timeout,
                       kafka_broker=kafka, **servers)

    def serve() -> int:
        endpoints = start_or_fail(stack)
        _print_endpoints(endpoints, data_dir, stack.startup_seconds, stack.logs_dir)
        typer.echo("press Ctrl-C to stop; 'payments stack restart NAME' restarts one server")
        sys.stdout.flush()
        _supervise(stack)
        return 0

    def stop() -> None:
        if stack.endpoints is not None or stack.pids:
            typer.echo("stopping…", err=True)
        stack.stop()

    # Interrupted before the stack was ready: exit 130.
    run_in_foreground(serve, stop, interrupted=lambda: 130 if stack.endpoints is None else 0)


def _supervise(stack: LocalStack) -> None:
    """Until a signal: report a server that exited (the others keep running, so that
    it can be restarted alone) and carry out start/stop/restart requests."""
    reported: set[str] = set()
    while True:
        time.sleep(0.5)
        for line in stack.serve_server_actions():
            typer.echo(line, err=True)
            reported.discard(line.split()[1])
        for name, rc in stack.exited().items():
            if name not in reported:
                reported.add(name)
                typer.secho(
                    f"warning: {name} exited with code {rc}: {devstack.log_tail(stack.log_path(name))} "
                    f"(see {stack.log_path(name)}); restart it with: payments stack start {name}",
                    fg="yellow",
                    err=True,
                )


def _up_detached(data_dir: Path, args: list[str], timeout: float) -> None:
    try:
        pid, data = start_background(data_dir, args, timeout + 15)
    except StackError as exc:
        raise fail(str(exc)) from None
    _print_endpoints(Endpoints.from_settings(data["settings"], data.get("pids")), data_dir,
                     data.get("startup_seconds"), data_dir / "logs")
    typer.echo(
        f"running in the background (pid {pid}); stop it with: payments stack down"
        + ("" if data_dir == DEFAULT_DATA_DIR.absolute() else f" --data-dir {data_dir}")
    )


@stack_app.command("down")
def down(data_dir: Path = DataDirOption) -> None:
    """Stop the stack recorded in <data-dir>/stack.json and every server it started.

    Works for a stack started with 'up --detach' or running in another terminal.
    """
    data_dir = data_dir.absolute()
    if devstack.read_stack_file(data_dir) is None:
        typer.echo(f"no stack running in {data_dir}")
        return
    stopped = devstack.stop_background(data_dir)
    if stopped:
        typer.echo(f"stopped: {', '.join(stopped)}")
    else:
        typer.echo(f"nothing was running; removed stale {data_dir / STACK_FILE_NAME}")


@stack_app.command("status")
def status_cmd(data_dir: Path = DataDirOption) -> None:
    """Show each server of the stack in <data-dir>: pid, process alive, port answering.

    Exits 1 unless everything is up.
    """
    from rich.table import Table

    data_dir = data_dir.absolute()
    st = devstack.status(data_dir)
    if not st.services:
        typer.echo(f"no stack running in {data_dir} (start one with: payments stack up)")
        raise typer.Exit(1)
    table = Table(title=f"stack in {data_dir} (started {st.started_at})", title_justify="left")
    for col in ("service", "pid", "process", "port", "endpoint"):
        table.add_column(col)
    healthy = True
    for s in st.services:
        proc = "external" if s.alive is None else "alive" if s.alive else "[red]dead[/red]"
        port = "answering" if s.answering else "[red]not answering[/red]"
        healthy &= s.answering and s.alive is not False
        table.add_row(s.name, str(s.pid or ""), proc, port, s.address)
    _console().print(table)
    if not healthy:
        raise typer.Exit(1)


def _server_action(action: str):
    def command(
        name: str = typer.Argument(..., help=f"The server: {', '.join(SERVICES)}."),
        data_dir: Path = DataDirOption,
        timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the server."),
    ) -> None:
        answer = request_server_action(data_dir.absolute(), name, action, timeout)
        if answer != "ok":
            raise fail(answer)
        typer.echo(f"{name}: {action} done")

    command.__doc__ = (
        f"{action.capitalize()} one server of the running stack, leaving the others running "
        "(its port and, for Kafka on noida-db, MongoDB and PostgreSQL, its data stay)."
    )
    return command


for _action in SERVER_ACTIONS:
    stack_app.command(_action)(_server_action(_action))


def register(app: typer.Typer) -> None:
    """Add ``payments stack`` (up / down / status / start / stop / restart) to the ``payments`` app."""
    app.add_typer(stack_app, name="stack")


def _standalone() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)

    @app.callback()
    def _root() -> None:
        """payments local stack (standalone entry point)."""

    return app


if __name__ == "__main__":  # pragma: no cover
    _standalone()()
