"""Every workflow type replays the histories recorded from it (tests/histories/, written by
``python -m tests.support.record_histories``): a change to a workflow that would break
the executions already in Temporal's histories fails here, before it can land."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from services.command.commands import CommandResult, CreatePayment
from services.command.temporal.workflows import CreatePaymentWorkflow, _execute
from tests.support.record_histories import HISTORIES, WORKFLOWS

RECORDED = sorted(HISTORIES.glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def _workflow_type(path: Path) -> str:
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return started["workflowType"]["name"]


def test_every_workflow_type_has_recorded_histories() -> None:
    names = {workflow._Definition.must_from_class(w).name for w in WORKFLOWS}
    assert {_workflow_type(p) for p in RECORDED} == names


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
async def test_the_workflows_replay_their_recorded_histories(path: Path) -> None:
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(_history(path))


@workflow.defn(name="CreatePayment", sandboxed=False)
class CreatePaymentWithATimer:
    """CreatePayment as a careless change would make it: a timer before its activity."""

    @workflow.run
    async def run(self, cmd: CreatePayment) -> CommandResult:
        await workflow.sleep(1)
        return await _execute(CreatePaymentWorkflow.activity, cmd)


async def test_a_non_deterministic_change_fails_the_replay() -> None:
    changed = [w for w in WORKFLOWS if w is not CreatePaymentWorkflow] + [CreatePaymentWithATimer]
    replayer = Replayer(workflows=changed, data_converter=pydantic_data_converter)
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(_history(HISTORIES / "CreatePayment.created.json"))
