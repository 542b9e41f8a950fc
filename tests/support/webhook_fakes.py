"""In-memory stand-ins for what a webhook attempt needs (services/webhooks/ports.py): the
delivery records and a receiver that answers as told and counts posts in flight."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from services.webhooks.messages import AttemptView, DeliveryStatus, PostAnswer


@dataclass
class FakeRecords:
    views: dict[str, AttemptView] = field(default_factory=dict)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    disable_on_failure: bool = False

    async def attempt_view(self, delivery_id: str) -> AttemptView | None:
        return self.views.get(delivery_id)

    async def record_attempt(self, delivery_id: str, **outcome: Any) -> bool:
        self.recorded.append({"delivery_id": delivery_id, **outcome})
        view = self.views[delivery_id]
        if outcome["ok"] or outcome["retry_in_seconds"] is None:
            status = DeliveryStatus.SUCCEEDED if outcome["ok"] else DeliveryStatus.FAILED
            self.views[delivery_id] = AttemptView(**{**view.__dict__, "status": status})
        return self.disable_on_failure and not outcome["ok"]


@dataclass
class FakeReceiver:
    answer: PostAnswer = field(default_factory=lambda: PostAnswer(True, 200, None))
    delay: float = 0.0
    posts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    in_flight: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_flight: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostAnswer:
        self.posts.append((url, body, headers))
        self.in_flight[url] += 1
        self.most_in_flight[url] = max(self.most_in_flight[url], self.in_flight[url])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight[url] -= 1
        return self.answer
