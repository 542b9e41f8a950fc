"""Small tools: mint a local JWT, export the event JSON Schema and the AsyncAPI document, create the
Kafka topics."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.auth import KNOWN_SCOPES, mint_token
from shared.events import event_json_schema_text
from shared.settings import Settings

SCHEMA_PATH = Path("docs/events.schema.json")
ASYNCAPI_PATH = Path("docs/asyncapi.yaml")


def token(
    org: str = typer.Option(..., "--org", help="Organization the token is scoped to."),
    scope: list[str] = typer.Option(
        list(KNOWN_SCOPES), "--scope", help="Scope to grant; repeat for several (default: all: read, write, webhooks)."
    ),
    subject: str = typer.Option(None, "--sub", help="Subject (user id) claim."),
    ttl: int = typer.Option(24 * 3600, "--ttl", help="Lifetime in seconds."),
) -> None:
    """Mint a JWT for local use (signed with PAYMENTS_JWT_SECRET)."""
    unknown = [s for s in scope if s not in KNOWN_SCOPES]
    if unknown:
        typer.secho(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(KNOWN_SCOPES)}", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(mint_token(org, scope, subject=subject, ttl_seconds=ttl))


def _write_generated(text: str, output: Path, check: bool, command: str) -> None:
    """Write ``text`` to ``output`` ('-': stdout), or with ``check`` exit 1 if it differs."""
    if str(output) == "-":
        typer.echo(text, nl=False)
        return
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            typer.secho(f"{output} is out of date: run 'payments {command}'", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    typer.echo(f"wrote {output}")


def schema(
    output: Path = typer.Option(SCHEMA_PATH, "--output", "-o", help="Where to write the schema ('-' for stdout)."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the file differs from the code's schema."),
) -> None:
    """Export the CloudEvents JSON Schema of payment events (docs/events.schema.json)."""
    _write_generated(event_json_schema_text(), output, check, "schema")


def asyncapi(
    output: Path = typer.Option(ASYNCAPI_PATH, "--output", "-o", help="Where to write it ('-' for stdout)."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if the file differs from the code's document."),
) -> None:
    """Export the AsyncAPI 3.0 document of the Kafka topics (docs/asyncapi.yaml): events,
    commands, command results and the dead-letter topics, from the code's models."""
    from services.tools.asyncapi import asyncapi_text

    _write_generated(asyncapi_text(), output, check, "asyncapi")


def _settings_classes() -> list[type[Settings]]:
    from services.command.config import CommandSettings

    return [Settings, CommandSettings]


def settings_rows() -> list[tuple[str, str, str]]:
    """(variable, default, where) for every setting of every process."""
    rows: dict[str, tuple[str, str, str]] = {}
    for cls in _settings_classes():
        where = "all processes" if cls is Settings else f"{cls.__module__.split('.')[1]} side"
        for name, field in cls.model_fields.items():
            var = f"PAYMENTS_{name.upper()}"
            if var in rows:
                continue
            default = "(secret)" if not field.repr else repr(field.get_default(call_default_factory=True))
            rows[var] = (var, default.replace("|", "\\|"), where)
    return sorted(rows.values())


def settings_markdown() -> str:
    lines = ["| variable | default | used by |", "|---|---|---|"]
    lines += [f"| `{var}` | `{default}` | {where} |" for var, default, where in settings_rows()]
    return "\n".join(lines) + "\n"


def show_settings(
    markdown: bool = typer.Option(False, "--markdown", help="Print the reference table of every variable."),
) -> None:
    """Show the settings a process started here would use (secrets hidden)."""
    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    effective = Settings()
    for name, field in Settings.model_fields.items():
        value = "****" if not field.repr else getattr(effective, name)
        typer.echo(f"PAYMENTS_{name.upper()}={value}")


def topics(
    check: bool = typer.Option(False, "--check", help="Exit 1 when a topic on the broker differs from what it "
                               "would be created with."),
) -> None:
    """Create the events, commands and dead-letter topics if missing (the deployment's job:
    Helm hook Job, compose kafka-init), with PAYMENTS_EVENTS_TOPIC_PARTITIONS,
    PAYMENTS_KAFKA_TOPIC_REPLICATION_FACTOR (3) and PAYMENTS_KAFKA_TOPIC_MIN_INSYNC_REPLICAS (2).
    Existing topics are left as they are; then every topic's partitions, replication and
    configs are read back from the broker and each difference is reported."""
    import asyncio

    from shared.kafka import TopicError, ensure_topics, topic_drift, topic_specs

    settings = Settings()
    specs = topic_specs(settings)

    async def create_and_read_back() -> tuple[list[str], list[str]]:
        created = await ensure_topics(settings.kafka_bootstrap, specs, create=True, request_timeout_ms=15000)
        return created, await topic_drift(settings.kafka_bootstrap, specs, request_timeout_ms=15000)

    try:
        created, drift = asyncio.run(create_and_read_back())
    except TopicError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - unreachable broker: one line, not a traceback
        typer.secho(f"error: cannot reach Kafka at {settings.kafka_bootstrap} (PAYMENTS_KAFKA_BOOTSTRAP): "
                    f"{type(exc).__name__}: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        configs = ", ".join(f"{k} {v}" for k, v in spec.configs().items())
        typer.echo(f"{spec.name}: {state} (partitions {spec.partitions}, replication {spec.replication_factor}, "
                   f"{configs} when created)")
    for line in drift:
        typer.secho(f"differs: {line}", fg="yellow", err=True)
    if drift and check:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("token")(token)
    app.command("topics")(topics)
    app.command("schema")(schema)
    app.command("asyncapi")(asyncapi)
    app.command("settings")(show_settings)
