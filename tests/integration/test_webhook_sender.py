"""The webhook sender (services/webhooks/adapters/sender.py) against a real receiver on
loopback: addresses checked again at each attempt, the connection made to the checked
address with the host named in Host, redirects not followed, the answer read up to a cap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.webhooks.adapters.sender import Sender
from tests.support.webhook_receiver import Receiver, webhook_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


def _sender(*, allow_private: bool) -> Sender:
    return Sender(connect_timeout=1, timeout=1, response_cap=64, allow_private=allow_private)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254", "10.0.0.1"])
async def test_private_addresses_are_refused_at_delivery_without_a_connection(receiver: Receiver, host: str) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    sender = _sender(allow_private=False)
    try:
        answer = await sender.post(f"https://{host}:{port}/x", b"{}", {})
    finally:
        await sender.close()
    assert not answer.ok and answer.status_code is None and answer.error.startswith("refused:"), answer
    assert receiver.received == []


async def test_a_host_name_is_reached_at_its_checked_address_and_named_in_host(receiver: Receiver) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    sender = _sender(allow_private=True)
    try:
        answer = await sender.post(f"http://localhost:{port}/named?q=1", b'{"a":1}', {"X-Test": "1"})
        redirected = await sender.post(f"{receiver.base_url}/redirect", b"{}", {})
        huge = await sender.post(f"{receiver.base_url}/huge", b"{}", {})
    finally:
        await sender.close()
    assert answer.ok and answer.status_code == 200
    [got, *_] = receiver.received
    assert got.path == "/named" and got.headers["Host"] == f"localhost:{port}" and got.body == b'{"a":1}'
    assert not redirected.ok and redirected.status_code == 302 and receiver.at("/trap") == []
    assert huge.ok and receiver.huge_bytes_sent < 100 << 20
