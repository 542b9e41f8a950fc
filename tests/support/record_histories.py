"""Record the history of every workflow scenario (tests/support/workflow_scenarios.py)
into tests/histories/<scenario>.json, for the replay test
(tests/workflows/test_workflow_replay.py).

    .venv/bin/python -m tests.support.record_histories

Run it when a workflow changes on purpose in a way old histories cannot replay (then
version the change with ``workflow.patched``, or keep the old histories beside the new
ones), or when a workflow type is added. Uses the time-skipping test server, no stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from temporalio.client import WorkflowFailureError

from services.command.temporal import registry as commands
from services.query.temporal import registry as queries
from services.webhooks.temporal.workflows import WebhookDeliveries
from tests.support.temporal_env import time_skipping, worker
from tests.support.workflow_scenarios import scenarios

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
WORKFLOWS = [*commands.WORKFLOWS, *queries.WORKFLOWS, WebhookDeliveries]


async def record(directory: Path = HISTORIES) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    async with time_skipping() as env:
        for scenario in scenarios():
            async with worker(env, WORKFLOWS, scenario.activities) as queue:
                handle = await env.client.start_workflow(scenario.workflow.run, scenario.input,
                                                         id=f"replay-{scenario.name}", task_queue=queue)
                try:
                    await handle.result()
                    failed = False
                except WorkflowFailureError:
                    failed = True
                if failed != scenario.fails:
                    raise SystemExit(f"{scenario.name}: {'failed' if failed else 'succeeded'}, "
                                     f"expected the opposite")
                history = await handle.fetch_history()
            path = directory / f"{scenario.name}.json"
            path.write_text(json.dumps(history.to_json_dict(), indent=1, sort_keys=True) + "\n")
            written.append(path)
            print(f"recorded {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}",
                  file=sys.stderr)
    return written


if __name__ == "__main__":
    logging.getLogger("temporalio").setLevel(logging.CRITICAL)  # the scenarios' planned failures
    asyncio.run(record())
    sys.stderr.flush()
    os._exit(0)  # the SDK can crash while the interpreter exits (temporalio/sdk-python#300)
