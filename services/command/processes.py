"""How each long-running command process runs: ``run_worker``, ``run_relay`` and
``run_intake`` (the ``payments`` sub-commands of services/command/cli.py).

Each opens its runtime (services/command/bootstrap.py), serves its ops endpoint
(``/healthz``, ``/readyz``, ``/metrics``: shared.ops.serving), runs until SIGTERM/SIGINT
(shared.ops.until_stopped) and shuts down in order. Kept apart from bootstrap (what to
build) and from the adapters (what a process does), so that neither imports the other
back. The API process is uvicorn's (services/command/http/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.command.adapters.intake import IntakeConsumer
from services.command.adapters.relay import OutboxRelay
from services.command.bootstrap import command_runtime, open_store, ops_checks
from services.command.config import CommandSettings
from shared.ops import serving, until_stopped

log = logging.getLogger("payments.command.processes")


async def _until_stopped_or_done(task: asyncio.Task[None]) -> None:
    """Wait for SIGTERM/SIGINT, or for ``task`` to end by itself (then re-raise its error)."""
    stopper = asyncio.create_task(until_stopped())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()


async def run_worker(settings: CommandSettings) -> None:
    """``payments command-worker``: workflows and activities on the command task queue."""
    async with (
        command_runtime(settings, embedded_worker=True) as runtime,
        serving("payments command worker", settings.host, settings.command_worker_metrics_port,
                ops_checks(runtime)),
    ):
        log.info("command worker polling %s", settings.command_task_queue,
                 extra={"fields": {"ops_port": settings.command_worker_metrics_port}})
        try:
            await until_stopped()
        finally:
            log.info("command worker stopping")


async def run_relay(settings: CommandSettings) -> None:
    """``payments relay``: the outbox to Kafka (needs PostgreSQL and Kafka, not Temporal)."""
    async with open_store(settings, pool_size=2) as store:
        relay = OutboxRelay(store.pool, settings)

        async def kafka() -> None:
            if not relay.kafka_ok:
                raise RuntimeError(f"the last publish round failed: {relay.last_error}")

        async with serving("payments outbox relay", settings.host, settings.relay_metrics_port,
                           {"postgres": store.ping, "kafka": kafka}):
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            log.info("relay publishing to %s on %s", settings.events_topic, settings.kafka_bootstrap)
            try:
                await _until_stopped_or_done(task)
            finally:
                stop.set()
                await task
            log.info("relay stopped", extra={"fields": {"published": relay.published}})


async def run_intake(settings: CommandSettings) -> None:
    """``payments intake``: Kafka commands through the command service, one result each."""
    async with command_runtime(settings, embedded_worker=settings.intake_embedded_worker) as runtime:
        intake = IntakeConsumer(runtime.service, settings)
        await intake.start()

        async def kafka() -> None:
            if not intake.kafka_ok:
                raise RuntimeError("no successful poll of the commands topic yet (broker unreachable?)")

        try:
            async with serving("payments command intake", settings.host, settings.intake_metrics_port,
                               {**ops_checks(runtime), "kafka": kafka}):
                stop = asyncio.Event()
                task = asyncio.create_task(intake.run(stop))
                log.info("intake consuming %s (group %s) on %s", settings.commands_topic, settings.intake_group,
                         settings.kafka_bootstrap)
                try:
                    await _until_stopped_or_done(task)
                finally:
                    # Finish the poll in hand (its offsets commit only once its results are sent).
                    stop.set()
                    intake.intake.stopping = True
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await intake.stop()
        log.info("intake stopped", extra={"fields": {"handled": intake.handled}})
