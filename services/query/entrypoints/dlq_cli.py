"""``payments dlq``: inspect, redrive and purge a dead-letter topic (thin entrypoint over
services/query/adapters/dlq.py; registered by services/query/entrypoints/cli.py)."""

from __future__ import annotations

import asyncio
import json
import time

import typer

from services.query.adapters import dlq
from shared.settings import get_settings

app = typer.Typer(help="Dead-letter topic: list, show, redrive, purge. See docs/operations.md, runbook.",
                  no_args_is_help=True)

TOPIC = typer.Option(None, "--topic", help="Dead-letter topic (default: PAYMENTS_DLQ_TOPIC).")


def _read(topic: str | None) -> tuple[str, list[dlq.DeadLetter]]:
    settings = get_settings()
    name = topic or settings.dlq_topic
    return name, asyncio.run(dlq.read_all(settings.kafka_bootstrap, name))


@app.command("list")
def list_(topic: str = TOPIC, as_json: bool = typer.Option(False, "--json", help="One JSON array.")) -> None:
    """Every dead-letter record: event id, payment, organization, reason, source partition/offset, time."""
    name, records = _read(topic)
    if as_json:
        typer.echo(dlq.as_json(records))
        return
    typer.echo(f"{len(records)} record(s) on {name}", err=True)
    for r in records:
        s = r.summary()
        typer.echo(f"{s['event_id']}  payment={s['payment_id']}  org={s['organization_id']}  "
                   f"source={s['source_partition']}/{s['source_offset']}  time={s['time']}  "
                   f"redrives={s['redrive_count']}  {s['kind']}: {(s['reason'] or '')[:200]}")


@app.command()
def show(event_id: str = typer.Argument(..., help="Event id (or the #digest `list` shows for a non-event)."),
         topic: str = TOPIC) -> None:
    """Headers and original bytes of the dead-letter record(s) of one event, as JSON."""
    _, records = _read(topic)
    found = [r.detail() for r in records if r.id == event_id]
    if not found:
        typer.echo(f"no dead-letter record for {event_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, indent=2))


@app.command("redrive")
def redrive_(
    event: list[str] = typer.Option([], "--event", help="Event id to redrive (repeatable)."),
    payment: list[str] = typer.Option([], "--payment", help="Redrive every record of this payment (repeatable)."),
    everything: bool = typer.Option(False, "--all", help="Redrive every record."),
    again: bool = typer.Option(False, "--again", help="Also records that already failed after a redrive."),
    topic: str = TOPIC,
) -> None:
    """Re-submit dead-lettered events to their source topic for projection, in original order.

    Projection is idempotent (versions), so redriving an event that was already applied
    changes nothing. One that fails again returns to the DLQ with its redrive count and
    is skipped by later redrives unless --again.
    """
    if not (event or payment or everything):
        raise typer.BadParameter("give --event, --payment or --all")
    settings = get_settings()
    name, records = _read(topic)
    chosen, skipped = dlq.select(records, event_ids=event, payment_ids=payment, everything=everything, again=again)
    for r in skipped:
        typer.echo(f"skipped {r.id}: failed again after {r.redrive_count} redrive(s) (use --again)", err=True)

    def progress(done: int, record: dlq.DeadLetter) -> None:
        typer.echo(f"[{done}/{len(chosen)}] redriven {record.id} (payment {record.payment_id})", err=True)

    count = asyncio.run(dlq.redrive(settings.kafka_bootstrap, chosen, settings.events_topic, progress))
    typer.echo(f"redrove {count} record(s) from {name}; skipped {len(skipped)}")


@app.command()
def purge(
    older_than_days: float = typer.Option(..., "--older-than-days", min=0,
                                          help="Delete records dead-lettered more than this many days ago."),
    topic: str = TOPIC,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete old dead-letter records (Kafka DeleteRecords: per partition, a prefix)."""
    settings = get_settings()
    name = topic or settings.dlq_topic
    if not yes:
        typer.confirm(f"delete records older than {older_than_days} days from {name}?", abort=True)
    before_ms = int((time.time() - older_than_days * 86400) * 1000)
    count = asyncio.run(dlq.purge(settings.kafka_bootstrap, name, before_ms))
    typer.echo(f"purged {count} record(s) from {name}")
