"""Webhook rules, pure: event names and subscriptions, the URL policy against SSRF, the
signature, the retry schedule. Written once here; the API, the consumer, the workflow
and the sender apply them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.events import TYPE_PREFIX, EventType

WEBHOOK_PREFIX = "payment."
ALL_EVENTS = "*"
# An event name a subscription may list: `payment.<x>` (new CloudEvent types just work).
EVENT_NAME_PATTERN = r"^(\*|payment\.[a-z][a-z0-9_]{0,63})$"
MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "Payments-Signature"
EVENT_ID_HEADER = "Payments-Event-Id"
ATTEMPT_HEADER = "Payments-Delivery-Attempt"
EVENT_TYPE_HEADER = "Payments-Event-Type"
# Cloud instance metadata addresses (AWS/GCP/Azure/OpenStack, Alibaba, AWS over IPv6).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "100.100.100.200", "fd00:ec2::254"))
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public


def webhook_event_name(cloudevent_type: str) -> str:
    """``com.gyroscops.payment.created`` -> ``payment.created``."""
    return WEBHOOK_PREFIX + cloudevent_type.removeprefix(TYPE_PREFIX)


def known_event_names() -> list[str]:
    """Every name a subscription may list: ``*`` and one per CloudEvent type the contract has."""
    return [ALL_EVENTS, *(webhook_event_name(t) for t in EventType)]


def subscribed(events: Iterable[str], cloudevent_type: str) -> bool:
    wanted = set(events)
    return ALL_EVENTS in wanted or webhook_event_name(cloudevent_type) in wanted


class UnsafeUrl(ValueError):
    """A webhook URL the policy refuses; the message says why (the API's 422 detail)."""


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntax checks: where to connect, what to name in Host/SNI."""

    url: str
    scheme: str
    host: str  # without brackets
    port: int


def parse_target(url: str, *, allow_private: bool) -> Target:
    """The syntax half of the policy: https only (http too with ``allow_private``), a host,
    no credentials, no fragment. Addresses are checked by :func:`check_address`."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UnsafeUrl("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("only https URLs are allowed" if not allow_private else "only http(s) URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL must not carry credentials")
    if parts.fragment:
        raise UnsafeUrl("the URL must not have a fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeUrl("the URL has no host")
    if not re.fullmatch(r"[A-Za-z0-9.\-:_%]+", host):
        raise UnsafeUrl("the host name has characters a host name cannot have")
    return Target(url=url, scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80))


def refused_reason(address: str) -> str | None:
    """Why an address may not receive webhooks (None: a public unicast address)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return refused_reason(str(mapped))
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            return refused_reason(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    checks = (
        (ip in METADATA_ADDRESSES, "a cloud metadata address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in SHARED_ADDRESS_SPACE, "a shared (CGNAT) address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for hit, why in checks if hit), None)


def check_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> list[str]:
    """The addresses to connect to; :class:`UnsafeUrl` if there are none or any is refused
    (one bad answer among good ones would let a rebinding resolver pick it)."""
    found = list(dict.fromkeys(addresses))
    if not found:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    if not allow_private:
        for address in found:
            if (why := refused_reason(address)) is not None:
                # The address itself is not named: the answer must not map internal DNS.
                raise UnsafeUrl(f"the host {host!r} resolves to {why}")
    return found


# --------------------------------------------------------------------------- signature


def signature_header(secrets: Iterable[str], timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>[,v1=<hex>]``: one v1 per active secret (Stripe's scheme)."""
    signed = str(timestamp).encode() + b"." + body
    macs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={timestamp}", *(f"v1={m}" for m in macs)])


def verify_signature(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (docs/webhooks.md); the tests use it too."""
    items = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in items if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for k, v in items if k == "v1")


# --------------------------------------------------------------------------- retries


def backoff_seconds(attempt: int, unit: float, *, base: float = 10.0, cap: float = 3600.0) -> float:
    """Wait after failed attempt ``attempt`` (1-based): exponential from ``base`` up to ``cap``,
    "equal jitter" (half fixed, half ``unit`` in [0, 1) of it) so that the receivers of one
    outage are not all retried at the same instant."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    return ceiling / 2 + ceiling / 2 * unit
