"""``payments webhooks``: with no sub-command, the webhooks process (a consumer group on
the events topic and the worker of the delivery workflows); ``list``, ``show`` and
``redeliver`` inspect and redeliver an organization's deliveries (operators; the same as
the API's /v1/webhook-endpoints)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import typer

from shared.settings import get_settings
from shared.telemetry import configure_logging

T = TypeVar("T")
app = typer.Typer(help="Deliver payment events to the organizations' webhook endpoints (docs/webhooks.md).",
                  no_args_is_help=False)
ORG = typer.Option(..., "--org", help="Organization.")


@app.callback(invoke_without_command=True)
def webhooks(ctx: typer.Context) -> None:
    """Run the webhooks process (no sub-command): events -> deliveries -> signed POSTs.

    /healthz, /readyz and /metrics on PAYMENTS_WEBHOOKS_METRICS_PORT (9106). Stops cleanly on SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    from services.webhooks.entrypoints.process import run_webhooks

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(run_webhooks(settings))


webhooks.group = app  # type: ignore[attr-defined]  # services/cli.py registers the group under the process name


def _with_runtime(work: Callable[[Any], Awaitable[T]]) -> T:
    from services.webhooks.bootstrap import webhook_runtime

    async def run() -> T:
        async with webhook_runtime(get_settings(), pool_size=2) as runtime:
            return await work(runtime)

    return asyncio.run(run())


def _echo(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command("list")
def list_(org: str = ORG, endpoint: str = typer.Option(None, "--endpoint", help="List this endpoint's deliveries "
                                                        "instead of the endpoints."),
          status: str = typer.Option(None, "--status", help="pending, succeeded or failed (with --endpoint)."),
          limit: int = typer.Option(50, "--limit", min=1, max=1000)) -> None:
    """The organization's endpoints, or one endpoint's recent deliveries."""
    from services.webhooks.messages import DeliveryStatus

    async def work(runtime: Any) -> Any:
        if endpoint is None:
            return [e.model_dump(mode="json") for e in await runtime.store.endpoints(org)]
        found = await runtime.store.deliveries(org, endpoint, limit=limit,
                                               status=DeliveryStatus(status) if status else None)
        return [d.model_dump(mode="json") for d in found]

    _echo(_with_runtime(work))


@app.command()
def show(endpoint: str = typer.Argument(..., help="Endpoint id."), org: str = ORG) -> None:
    """One endpoint and its last deliveries."""

    async def work(runtime: Any) -> Any:
        found = await runtime.store.endpoint(org, endpoint)
        if found is None:
            return None
        log = await runtime.store.deliveries(org, endpoint, limit=20)
        return {**found.model_dump(mode="json"), "deliveries": [d.model_dump(mode="json") for d in log]}

    shown = _with_runtime(work)
    if shown is None:
        typer.secho(f"no webhook endpoint {endpoint} in {org}", fg="red", err=True)
        raise typer.Exit(1)
    _echo(shown)


@app.command()
def redeliver(endpoint: str = typer.Argument(..., help="Endpoint id."),
              delivery: str = typer.Argument(None, help="Delivery id (else --failed-since)."), org: str = ORG,
              failed_since: datetime = typer.Option(None, "--failed-since",
                                                    help="Every failed delivery created since (ISO 8601).")) -> None:
    """Deliver one delivery again, or every failed one since a time."""
    from services.webhooks.entrypoints.redelivery import redeliver as again

    if (delivery is None) == (failed_since is None):
        typer.secho("name a delivery id or --failed-since (one of them)", fg="red", err=True)
        raise typer.Exit(2)

    async def work(runtime: Any) -> int:
        return await again(runtime.store, runtime.temporal, runtime.settings, org, endpoint, delivery_id=delivery,
                           failed_since=failed_since)

    typer.echo(f"redelivered: {_with_runtime(work)}")


