"""`payments demo`'s webhook part: a receiver on loopback (a thread), an endpoint of the
first organization registered on it, and what arrived (docs/webhooks.md)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from services.webhooks.domain import SIGNATURE_HEADER, verify_signature
from shared.auth import SCOPE_WEBHOOKS, mint_token
from shared.settings import Settings


class DemoReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str, bytes]] = []
        self.lock = threading.Lock()
        self.endpoint: dict[str, Any] | None = None
        self.note = ""

    def summary(self) -> dict[str, Any]:
        with self.lock:
            got = list(self.received)
        secret = self.endpoint["secret"] if self.endpoint else ""
        by_payment: dict[str, list[int]] = {}
        for event, _, _ in got:
            by_payment.setdefault(event["subject"], []).append(event["paymentversion"])
        return {"received": len(got), "events": len({e["id"] for e, _, _ in got}),
                "signatures verified": sum(verify_signature(secret, h, b, now=int(time.time())) for _, h, b in got),
                "payments": len(by_payment),
                "payments in version order": sum(v == sorted(v) for v in by_payment.values()),
                "types": sorted({e["type"].rsplit(".", 1)[-1] for e, _, _ in got})}


def _handler(receiver: DemoReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.received.append((json.loads(body), self.headers.get(SIGNATURE_HEADER, ""), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def webhook_demo(command: str, settings: Settings, org: str) -> Iterator[DemoReceiver]:
    """A receiver and ``org``'s endpoint on it for the block; both gone after."""
    receiver = DemoReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    auth = {"Authorization": "Bearer " + mint_token(org, [SCOPE_WEBHOOKS], settings=settings)}
    url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
    try:
        with httpx.Client(timeout=30, headers=auth) as http:
            created = http.post(f"{command}/v1/webhook-endpoints",
                                json={"url": url, "events": ["*"], "description": "payments demo"})
            if created.status_code == 201:
                receiver.endpoint = created.json()
            else:
                receiver.note = f"no webhook endpoint registered ({created.status_code}: {created.text[:200]})"
            try:
                yield receiver
            finally:
                if receiver.endpoint:
                    http.delete(f"{command}/v1/webhook-endpoints/{receiver.endpoint['id']}")
    finally:
        server.shutdown()
        server.server_close()


def wait_for(receiver: DemoReceiver, events: int, timeout: float = 30.0) -> dict[str, Any]:
    """What arrived once ``events`` distinct events did (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while receiver.summary()["events"] < events and time.monotonic() < deadline and receiver.endpoint:
        time.sleep(0.2)
    return receiver.summary()
