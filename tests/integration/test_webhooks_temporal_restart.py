"""Issue 27: webhook deliveries waiting on their retry timers survive a restart of the
Temporal server. Temporal here is a private embedded server of this test (the local
stack's own code, persistent so it comes back with its histories); every other server is
the session's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devstack import LocalStack
from shared.auth import SCOPE_WEBHOOKS, SCOPE_WRITE, mint_token
from shared.settings import Settings
from tests.support.systems import isolated_system
from tests.support.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
async def temporal_settings(settings: Settings, private_temporal: LocalStack) -> AsyncIterator[Settings]:
    yield settings.model_copy(update={"temporal_address": private_temporal.endpoints.temporal_address})


async def test_pending_retries_survive_a_temporal_restart(temporal_settings: Settings, private_temporal: LocalStack,
                                                          tmp_path: Path) -> None:
    async with webhook_receiver() as receiver, isolated_system(
            temporal_settings, "webhooks-temporal", tmp_path / "logs", names=["command-api", "relay", "webhooks"],
            temporal_address=temporal_settings.temporal_address, webhooks_allow_private=True,
            webhooks_retry_base_seconds=1.0, webhooks_retry_cap_seconds=2.0) as system:
        s = system.settings
        token = mint_token("org-restart", [SCOPE_WRITE, SCOPE_WEBHOOKS], settings=s)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.command_api_port}", timeout=60,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            receiver.failing_until["/restart"] = time.monotonic() + 3600
            created = await http.post("/v1/webhook-endpoints", json={"url": receiver.base_url + "/restart",
                                                                      "events": ["*"]})
            assert created.status_code == 201, created.text
            payments = []
            for _ in range(3):
                payment = await http.post("/v1/payments", json={"amount": 5, "currency": "EUR"})
                assert payment.status_code == 201, payment.text
                done = await http.post(f"/v1/payments/{payment.json()['id']}/complete")
                assert done.status_code == 200, done.text
                payments.append(payment.json()["id"])

            async def attempted() -> None:
                while len({r.event["subject"] for r in receiver.at("/restart")}) < 3:
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(attempted(), 120)
            await asyncio.to_thread(private_temporal.stop_server, "temporal")
            await asyncio.sleep(3)
            await asyncio.to_thread(private_temporal.start_server, "temporal")
            receiver.failing_until["/restart"] = 0.0

            async def delivered() -> None:
                while True:
                    ok = [r for r in receiver.at("/restart")]
                    versions = {p: [r.event["paymentversion"] for r in ok if r.event["subject"] == p] for p in payments}
                    if all(v and v[-1] == 2 for v in versions.values()):
                        return
                    await asyncio.sleep(0.3)

            await asyncio.wait_for(delivered(), 180)
        for p in payments:
            versions = [r.event["paymentversion"] for r in receiver.at("/restart") if r.event["subject"] == p]
            assert versions == sorted(versions) and set(versions) == {1, 2}, versions
