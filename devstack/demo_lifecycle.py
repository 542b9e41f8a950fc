"""The demo's lifecycle steps (`payments demo`): a payment that expires on its deadline,
and one partly refunded twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from shared.auth import SCOPE_WRITE, mint_token
from shared.settings import Settings

DEMO_EXPIRY_SECONDS = 3.0


def create_expiring(http: httpx.Client, command: str, auth: dict[str, str]) -> dict:
    """One payment left processing past its deadline, which expires it (system:expiry)."""
    deadline = datetime.now(UTC) + timedelta(seconds=DEMO_EXPIRY_SECONDS)
    resp = http.post(f"{command}/v1/payments", headers=auth, json={
        "amount": 4200, "currency": "EUR", "description": "quote, never captured", "expires_at": deadline.isoformat(),
        "metadata": {"source": "demo"}})
    resp.raise_for_status()
    return resp.json()


def show_expired(http: httpx.Client, query: str, auth: dict[str, str], payment: dict, console: object) -> None:
    """Waits (min_version 2, bounded by the query side) until the expiry is projected."""
    left = datetime.fromisoformat(payment["expires_at"]) - datetime.now(UTC)
    time.sleep(max(0.0, left.total_seconds()))
    read = http.get(f"{query}/v1/payments/{payment['id']}", params={"min_version": 2}, headers=auth)
    read.raise_for_status()
    console.print(f"payment {payment['id'][:8]} had expires_at {payment['expires_at']}: "  # type: ignore[attr-defined]
                  f"now {read.json()['status']} (version {read.json()['version']}, actor system:expiry)")


def refunded_twice(http: httpx.Client, command: str, org: str, settings: Settings) -> dict:
    """One payment of ``org``, completed, then partly refunded twice: what is left stays paid."""
    auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_WRITE], settings=settings)}
    body = {"amount": 12000, "currency": "EUR", "description": f"annual support plan {org}",
            "metadata": {"source": "demo"}}
    payment = http.post(f"{command}/v1/payments", json=body, headers=auth)
    payment.raise_for_status()
    pid = payment.json()["id"]
    http.post(f"{command}/v1/payments/{pid}/complete", headers=auth).raise_for_status()
    answer: dict = {}
    for amount, reason in ((3000, "one seat cancelled"), (1500, "goodwill for an outage")):
        resp = http.post(f"{command}/v1/payments/{pid}/refunds", json={"amount": amount, "reason": reason},
                         headers=auth)
        resp.raise_for_status()
        answer = resp.json()
    return answer
