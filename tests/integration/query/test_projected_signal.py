"""The projector's commit signal wakes read-your-writes waits (adapters/projected_signal.py),
through real MongoDB and Redis.

The handlers here poll only after 30 s, so a wait that looks again or returns did so
because the signal woke it: the projector's path is ``apply_batch`` then
``cache.announce`` of the payments it wrote. A commit of another payment, or of the same
payment id in another organization, must not wake it.
"""

from __future__ import annotations

import asyncio

import pytest

from services.query.adapters.batch_writes import apply_batch
from services.query.handlers import NotCaughtUp, QueryHandlers
from shared.events import EventType, new_event
from tests.support.builders import snapshot

SLOW_POLL = (30.0, 30.0)


async def test_a_commit_signal_wakes_the_waits_of_its_payments_only(runtime):
    handlers = QueryHandlers(runtime.read_model, runtime.cache, max_wait=60, signal=runtime.handlers.signal,
                             poll=SLOW_POLL)
    looks = {"org-a": 0}
    versions = runtime.read_model.versions

    async def counted(org, ids):  # noqa: ANN001, ANN202
        looks[org] = looks.get(org, 0) + 1
        return await versions(org, ids)

    runtime.read_model.versions = counted
    payment = snapshot("sig-1", "org-a")
    waiting = asyncio.create_task(handlers.wait_for("org-a", {"sig-1": 1}))
    try:
        # Until the subscription is up a publish can be missed: publish until it is seen
        # (each wake is one more look). Only org-a's publishes count here.
        async def woken() -> bool:
            await runtime.cache.announce([("org-a", "sig-1")])
            await asyncio.sleep(0.05)
            return looks["org-a"] > 1

        for _ in range(100):
            if await woken():
                break
        else:
            raise AssertionError("the wait never woke on its organization's signal")
        assert not waiting.done()  # woken, looked, not there yet: waits again

        seen = looks["org-a"]
        await runtime.cache.announce([("org-b", "sig-1"), ("org-a", "sig-2")])  # not its payment
        await asyncio.sleep(0.3)
        assert looks["org-a"] == seen and not waiting.done()

        cols = await runtime.read_model.active(fresh=True)
        await apply_batch(runtime.mongo, cols, [new_event(EventType.CREATED, payment)])
        await runtime.cache.announce([("org-a", "sig-1")])  # what the projector does after its commit
        await asyncio.wait_for(waiting, 10)  # returns: the payment is there
    finally:
        waiting.cancel()
        runtime.read_model.versions = versions


async def test_while_the_signal_is_subscribed_a_wait_looks_rarely_besides(runtime):
    """With the default poll, a wait on a payment nobody commits looks at MongoDB about
    once a second while the signal is live (not every 10..200 ms: at 90 creates/s those
    looks were most of the read model's load), and polls fast again when it is not."""
    signal = runtime.handlers.signal
    looks = 0
    versions = runtime.read_model.versions

    async def counted(org, ids):  # noqa: ANN001, ANN202
        nonlocal looks
        looks += 1
        return await versions(org, ids)

    runtime.read_model.versions = counted
    try:
        async with signal.watching("org-a", ["warm-up"]):  # starts the subscription
            for _ in range(100):
                if signal.live:
                    break
                await asyncio.sleep(0.05)
        assert signal.live
        with pytest.raises(NotCaughtUp):
            await QueryHandlers(runtime.read_model, runtime.cache, max_wait=2.5, signal=signal).wait_for(
                "org-a", {"never-projected": 1})
        assert 2 <= looks <= 5, looks  # the first look, then one a second (the fast polls: ~14)
        looks = 0
        with pytest.raises(NotCaughtUp):
            await QueryHandlers(runtime.read_model, runtime.cache, max_wait=1.0, signal=None).wait_for(
                "org-a", {"never-projected": 1})
        assert looks >= 6, looks  # without the signal: 10, 20, 40, 80, 160, 200 ms...
    finally:
        runtime.read_model.versions = versions
