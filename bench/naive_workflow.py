"""The baseline of the benchmark: the seed's shape, with no latency optimisation.

validate -> execute -> publish as three regular activities (each a task-queue round
trip through the server), the payment row and its outbox row in two transactions (as
the seed published outside the write), regular (non-eager) workflow start.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from services.command import domain
    from services.command.adapters.store import PaymentStore
    from services.command.commands import CommandResult, CreatePayment
    from shared.events import EventType

OPTIONS = {"start_to_close_timeout": timedelta(seconds=10)}


class NaiveActivities:
    def __init__(self, store: PaymentStore, source: str) -> None:
        self.store = store
        self.source = source

    @activity.defn(name="naive.validate")
    async def validate(self, cmd: CreatePayment) -> None:
        domain.validate_create(cmd, activity.info().started_time)

    @activity.defn(name="naive.execute")
    async def execute(self, cmd: CreatePayment) -> CommandResult:
        decision = domain.decide_create(cmd, activity.info().started_time)
        async with self.store.unit_of_work() as uow:
            await uow.insert_payments([decision.snapshot])
        return CommandResult(command_id=cmd.command_id, payment=decision.snapshot)

    @activity.defn(name="naive.publish")
    async def publish(self, result: CommandResult) -> None:
        decision = domain.Decision(result.payment, EventType.CREATED, {}, result.command_id, None)
        async with self.store.unit_of_work() as uow:
            await uow.add_events([decision.event(self.source)])


@workflow.defn(name="NaiveCreatePayment")
class NaiveCreatePaymentWorkflow:
    @workflow.run
    async def run(self, cmd: CreatePayment) -> CommandResult:
        await workflow.execute_activity_method(NaiveActivities.validate, cmd, **OPTIONS)
        result = await workflow.execute_activity_method(NaiveActivities.execute, cmd, **OPTIONS)
        await workflow.execute_activity_method(NaiveActivities.publish, result, **OPTIONS)
        return result
