"""``payments reconcile``: the thin entrypoint of services/tools/reconcile.py."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from shared.settings import Settings, get_settings
from shared.telemetry import configure_logging


async def run_reconcile(settings: Settings, org: str | None, repair: bool, grace: float,
                        progress: bool) -> tuple[dict, int]:
    """Check (and with ``repair`` fix) every organization; ``(report, drift count)``."""
    from rich.progress import Progress

    from services.command.adapters.store import create_pool
    from services.query.bootstrap import query_runtime
    from services.tools.reconcile import Drift, Reconciler, report
    from services.tools.reconcile_history import HistoryReconciler

    pool = await create_pool(settings.database_url, size=2)
    try:
        async with query_runtime(settings) as runtime:
            reconciler = Reconciler(pool, runtime.read_model, runtime.cache, source=settings.event_source,
                                    grace_seconds=grace)
            histories = HistoryReconciler(pool, runtime.read_model, timedelta(seconds=grace))
            orgs = await reconciler.organizations(org)
            drift, repaired = Drift(), 0
            with Progress(transient=True, disable=not progress) as bar:
                task = bar.add_task("reconciling organizations", total=len(orgs))
                for name in orgs:
                    found, truth, docs = await reconciler.check(name)
                    drift.merge(found)
                    if repair and found.total:
                        repaired += await reconciler.repair(name, found, truth, docs)
                    gaps, fixed = await histories.run(name, repair=repair, now=datetime.now(UTC))
                    drift.merge(Drift(history_missing=gaps.missing, history_extra=gaps.extra,
                                      history_stale=gaps.stale))
                    if fixed:
                        repaired += fixed
                        await runtime.cache.bump({name})
                    bar.advance(task)
            return {**report(drift), "organizations": len(orgs), "repaired_writes": repaired}, drift.total
    finally:
        await pool.close()


def _export(counts: dict[str, int], pushgateway: str | None, metrics_file: Path | None) -> None:
    from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile

    from shared.telemetry import RECONCILE_DRIFT, RECONCILE_LAST_RUN

    for kind, n in counts.items():
        RECONCILE_DRIFT.labels(kind).set(n)
    RECONCILE_LAST_RUN.set_to_current_time()
    registry = CollectorRegistry()
    registry.register(RECONCILE_DRIFT)
    registry.register(RECONCILE_LAST_RUN)
    if pushgateway:
        push_to_gateway(pushgateway, job="payments-reconcile", registry=registry)
    if metrics_file:
        write_to_textfile(str(metrics_file), registry)


def reconcile(
    org: str = typer.Option(None, "--org", help="Only this organization (default: every one on either side)."),
    repair: bool = typer.Option(False, "--repair", help="Rewrite what differs on the read side from PostgreSQL "
                                "(history gaps filled from its event log)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    grace: float = typer.Option(60.0, "--grace-seconds",
                                help="Payments changed this recently are still in flight: not drift."),
    pushgateway: str = typer.Option(None, "--pushgateway", help="Push payments_reconcile_drift to this "
                                    "Prometheus Pushgateway (default PAYMENTS_RECONCILE_PUSHGATEWAY_URL)."),
    metrics_file: Path = typer.Option(None, "--metrics-file",
                                      help="Write payments_reconcile_drift to this file (node-exporter textfile)."),
) -> None:
    """Compare PostgreSQL (the source of truth) with the read model, its statistics and history.

    Reports payments missing, extra or stale on the read side, statistics buckets that
    differ from a recount, and versions of payments' histories missing (a gap), extra or
    stale against PostgreSQL's event log. Exit code 0 when clean, 1 on any drift (counted before
    --repair; run again to confirm a repair). Idempotent.
    """
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    result, drift = asyncio.run(run_reconcile(settings, org, repair, grace, progress=sys.stderr.isatty() and not as_json))
    _export(result["counts"], pushgateway or settings.reconcile_pushgateway_url, metrics_file)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        counts = ", ".join(f"{n} {kind}" for kind, n in result["counts"].items())
        verdict = "clean" if drift == 0 else f"drift: {counts}"
        typer.echo(f"{result['organizations']} organizations checked; {verdict}"
                   + (f"; {result['repaired_writes']} read-side writes repaired" if repair and drift else ""))
        for kind in ("missing", "extra", "stale"):
            for pid in result[kind][:20]:
                typer.echo(f"  {kind}: payment {pid}")
            for version in result[f"history_{kind}"][:20]:
                typer.echo(f"  history {kind}: version {version}")
        for bucket in result["buckets"][:20]:
            typer.echo(f"  bucket {bucket['organization_id']} {bucket['day']} {bucket['currency']} "
                       f"{bucket['status']}: expected {bucket['expected']}, found {bucket['actual']}")
    raise typer.Exit(1 if drift else 0)

