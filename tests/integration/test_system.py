"""The whole system as it runs in production: every long-running `payments` process of the
process table (shared/processes.py), real servers.

* end to end: a command through the command API is visible through the query API, and
  ``min_version`` returns the new version without the test sleeping;
* read-your-writes: a search with the command's consistency token sees the write, every
  time, over HTTP and through the facade;
* every metric name the Grafana dashboard and the alert rules use is exported by a
  running process (DESIGN section 8; deploy/ must not chart a metric nobody exports).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.system import base_url
from shared.auth import SCOPE_READ, SCOPE_WRITE, mint_token
from shared.processes import LONG_RUNNING
from shared.settings import Settings
from tests.support.metric_names import base_name, referenced_metric_names
from tests.support.systems import exercise_every_series, isolated_system


@pytest.fixture(scope="module")
async def system(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    async with isolated_system(settings, "system", tmp_path_factory.mktemp("system-logs")) as running:
        yield running.settings


def _auth(settings: Settings, org: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(org, [SCOPE_READ, SCOPE_WRITE], settings=settings)}


async def test_command_becomes_visible_through_the_query_api(system: Settings) -> None:
    command = f"http://127.0.0.1:{system.command_api_port}"
    query = f"http://127.0.0.1:{system.query_api_port}"
    auth = _auth(system, "org-e2e")
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.post(f"{command}/v1/payments", headers=auth,
                                  json={"amount": 4200, "currency": "EUR", "description": "e2e"})
        assert created.status_code == 201, created.text
        payment = created.json()
        completed = await http.post(f"{command}/v1/payments/{payment['id']}/complete", headers=auth)
        assert completed.status_code == 200, completed.text
        assert completed.json()["version"] == 2

        # No sleep: the read blocks (bounded) until the projector has applied version 2.
        read = await http.get(f"{query}/v1/payments/{payment['id']}", params={"min_version": 2}, headers=auth)
        assert read.status_code == 200, read.text
        assert (read.json()["version"], read.json()["status"], read.json()["amount"]) == (2, "completed", 4200)

        found = await http.get(f"{query}/v1/payments", params={"status": "completed"}, headers=auth)
        assert [p["id"] for p in found.json()["data"]] == [payment["id"]]
        stats = (await http.get(f"{query}/v1/statistics", headers=auth)).json()
        assert stats["count"] == 1 and stats["currencies"][0]["sum"] == 4200

        other = await http.get(f"{query}/v1/payments/{payment['id']}", headers=_auth(system, "org-other"))
        assert other.status_code == 404


async def test_every_charted_metric_is_exported(system: Settings) -> None:
    await exercise_every_series(system, "org-metrics")
    async with httpx.AsyncClient(timeout=30) as http:
        exported: dict[str, set[str]] = {}
        for process in LONG_RUNNING:
            text = (await http.get(f"{base_url(process, system)}/metrics")).text
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    exported.setdefault(base_name(line.split("{")[0].split(" ")[0]), set()).add(process.name)

    missing = sorted(referenced_metric_names() - set(exported))
    assert not missing, f"charted or alerted on but exported by no process: {missing}"
    # Each process exports only its own payments_* metrics: those the process table gives it.
    for name, processes in exported.items():
        if name.startswith("payments_"):
            owners = {p.name for p in LONG_RUNNING if name.removesuffix("_total") in p.metrics}
            assert processes <= owners, f"{name} exported by {sorted(processes - owners)}"
    assert exported["payments_outbox_backlog"] == {"relay"}
    assert exported["payments_projection_lag_seconds"] == {"projector"}
    assert exported["payments_intake_messages_total"] == {"intake"}


async def test_facade_commands_and_queries_over_temporal(system: Settings) -> None:
    """The seed's PaymentCqsService: commands and reads through Temporal only."""
    from services.command.commands import CreatePayment, ModifyPayment, Rejected
    from services.facade import PaymentCqsService
    from services.query.queries import SearchQuery, StatisticsQuery
    from shared.payment import PaymentAction

    cqs = await PaymentCqsService.connect(system)
    payment_id = f"facade-{uuid.uuid4().hex[:8]}"
    create = CreatePayment(command_id=f"create-{payment_id}", organization_id="org-facade",
                           payment_id=payment_id, amount=990, currency="JPY")
    result = await cqs.process_command(create)
    assert (result.payment.id, result.payment.version) == (payment_id, 1)
    assert (await cqs.process_command(create)).payment == result.payment  # a retry: same result

    complete = ModifyPayment(command_id=f"complete-{payment_id}", organization_id="org-facade",
                             action=PaymentAction.COMPLETE, payment_id=payment_id, expected_version=1)
    assert await cqs.process_command_async(complete) == cqs.workflow_id(complete)
    with pytest.raises(Rejected):
        await cqs.process_command(ModifyPayment(
            command_id=f"update-{payment_id}", organization_id="org-facade", action=PaymentAction.UPDATE,
            payment_id=payment_id, amount=-5))

    # The projection is asynchronous: the started command's result (the same workflow) is
    # what a read waits for.
    completed = await cqs.process_command(complete)
    page = await cqs.search_payments("org-facade", SearchQuery(status="completed"), consistent_with=completed)
    assert [p.id for p in page.data] == [payment_id]
    stats = await cqs.payment_statistics("org-facade", StatisticsQuery(), consistent_with=[result, completed])
    assert stats.count == 1 and stats.currencies[0].sum == 990
    assert (await cqs.get_payment("org-other", payment_id)) is None
    history = await cqs.payment_history("org-facade", payment_id, consistent_with=completed)
    assert history is not None and [(e.version, e.actor) for e in history.data] == [(1, "facade"), (2, "facade")]
    assert history.data[1].changes == {"status": {"old": "processing", "new": "completed"}}
    assert (await cqs.payment_history("org-other", payment_id)) is None


# The seed's two integration tests (testCommandQuerySeparation: a command, then a search
# sees it; testQueryCaching: the same search twice, the second from the cache), ported to
# HTTP and to the facade and run many times in a row with no sleep.
RUNS = 50


def _search_hits(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("payments_queries_total{") and 'kind="search"' in line and 'cache="hit"' in line)


async def test_http_command_then_search_sees_it_every_time(system: Settings) -> None:
    command = f"http://127.0.0.1:{system.command_api_port}"
    query = f"http://127.0.0.1:{system.query_api_port}"
    org = f"org-ryw-{uuid.uuid4().hex[:8]}"
    auth = _auth(system, org)
    async with httpx.AsyncClient(timeout=30) as http:
        hits_before = _search_hits((await http.get(f"{query}/metrics")).text)
        tokens = []
        for run in range(1, RUNS + 1):
            created = await http.post(f"{command}/v1/payments", headers=auth, json={"amount": 100, "currency": "EUR"})
            assert created.status_code == 201, created.text
            tokens.append(created.headers["Consistency-Token"])
            params = {"consistent_with": tokens[-1], "size": 10}
            first = await http.get(f"{query}/v1/payments", params=params, headers=auth)
            assert first.status_code == 200, first.text
            assert first.json()["total"] == run, f"run {run}: the search missed the payment just created"
            second = await http.get(f"{query}/v1/payments", params=params, headers=auth)
            assert second.json() == first.json()
        # The second search is a cache hit unless the projector's own bump for the write
        # landed between the two reads (then it is a miss with the same, right answer).
        hits = _search_hits((await http.get(f"{query}/metrics")).text) - hits_before
        assert hits >= RUNS / 2, f"only {hits} of {RUNS} repeated searches came from the cache"
        stats = await http.get(f"{query}/v1/statistics", params={"consistent_with": tokens[-3:]}, headers=auth)
        assert stats.json()["count"] == RUNS and stats.json()["currencies"][0]["sum"] == 100 * RUNS


async def test_facade_command_then_search_sees_it_every_time(system: Settings) -> None:
    from services.command.commands import CreatePayment
    from services.facade import PaymentCqsService
    from services.query.queries import SearchQuery, StatisticsQuery

    cqs = await PaymentCqsService.connect(system)
    org = f"org-ryw-facade-{uuid.uuid4().hex[:8]}"
    for run in range(1, RUNS + 1):
        payment_id = f"ryw-{uuid.uuid4().hex[:10]}"
        result = await cqs.process_command(CreatePayment(
            command_id=f"create-{payment_id}", organization_id=org, payment_id=payment_id, amount=250,
            currency="EUR"))
        query = SearchQuery(limit=10)
        first = await cqs.search_payments(org, query, consistent_with=result)
        assert first.total == run, f"run {run}: the search missed the payment just created"
        assert await cqs.search_payments(org, query, consistent_with=result) == first
    stats = await cqs.payment_statistics(org, StatisticsQuery(), consistent_with=result)
    assert stats.count == RUNS and stats.currencies[0].sum == 250 * RUNS
    assert (await cqs.get_payment(org, payment_id, consistent_with=result)).id == payment_id
