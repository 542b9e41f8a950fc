"""The process table (shared/processes.py) agrees with what it names: sub-commands,
servers, settings and metrics."""

from __future__ import annotations

import typer
from prometheus_client import CollectorRegistry

from services.cli import app
from shared import telemetry
from shared.dependencies import CHECKS
from shared.processes import BY_NAME, COMMAND, LONG_RUNNING, PROCESSES, QUERY, TOOLS, WEBHOOKS, port_default
from shared.settings import Settings


def test_every_process_is_a_payments_sub_command_of_its_wing() -> None:
    commands = typer.main.get_command(app).commands
    for process in PROCESSES:
        module, _, function = process.entrypoint.partition(":")
        assert commands[process.name].callback.__module__ == module
        assert commands[process.name].callback.__name__ == function
        assert process.wing in (COMMAND, QUERY, WEBHOOKS, TOOLS)
        assert module.startswith(f"services.{process.wing}.")
    assert len(BY_NAME) == len(PROCESSES), "a name appears twice"


def test_needs_name_start_up_checks() -> None:
    for process in PROCESSES:
        assert process.needs and set(process.needs) <= set(CHECKS), process.name


def test_ports_are_settings_with_the_table_defaults() -> None:
    ports = [port_default(p.name) for p in LONG_RUNNING]
    assert len(set(ports)) == len(ports), "two processes share a default port"
    for process in LONG_RUNNING:
        field = Settings.model_fields[process.port_setting]
        assert field.default == port_default(process.name)
        assert process.port_env == f"PAYMENTS_{process.port_setting.upper()}"
    one_shots = [p for p in PROCESSES if not p.long_running]
    assert {p.name for p in one_shots} == {"migrate", "replay", "reconcile"}
    assert not any(p.api or p.verifies_tokens for p in one_shots)


def test_every_metric_has_an_exporter_and_each_process_exports_only_its_own(monkeypatch) -> None:  # noqa: ANN001
    owned = {id(m) for metrics in telemetry.PROCESS_METRICS.values() for m in metrics}
    assert {id(m) for m in telemetry.ALL_METRICS} == owned
    for process in PROCESSES:
        if not process.metrics:
            continue
        registry = CollectorRegistry()  # what the process's /metrics serves, after export_only
        for metric in telemetry.ALL_METRICS:
            registry.register(metric)
        monkeypatch.setattr(telemetry, "REGISTRY", registry)
        telemetry.export_only(process.name)
        assert {family.name for family in registry.collect()} == set(process.metrics), process.name


def test_the_apis_verify_tokens() -> None:
    assert {p.name for p in PROCESSES if p.verifies_tokens} == {p.name for p in PROCESSES if p.api} == {
        "command-api", "query-api"}


def test_each_consumer_names_its_group_setting_and_gets_a_static_id_per_slot() -> None:
    from devstack.system import GROUP_INSTANCE_ID_ENV, member_env
    from services.command.config import CommandSettings

    consumers = {p.name: p.group_field for p in PROCESSES if p.group_field}
    assert consumers == {"intake": "intake_group", "projector": "projector_group", "webhooks": "webhooks_group"}
    for name, field in consumers.items():
        assert field in CommandSettings.model_fields, field
        assert member_env(BY_NAME[name], 1) == {GROUP_INSTANCE_ID_ENV: f"{name}-1"}
    assert member_env(BY_NAME["relay"]) == {}  # no consumer group, no instance id
    assert GROUP_INSTANCE_ID_ENV == "PAYMENTS_" + "kafka_group_instance_id".upper()
