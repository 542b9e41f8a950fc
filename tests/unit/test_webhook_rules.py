"""The webhook rules, pure (services/webhooks/domain.py): event names, the URL policy
against SSRF, Stripe's signature scheme, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.webhooks.domain import (
    UnsafeUrl,
    backoff_seconds,
    check_addresses,
    parse_target,
    refused_reason,
    signature_header,
    subscribed,
    verify_signature,
    webhook_event_name,
)
from shared.events import EventType


def test_cloudevent_types_map_to_webhook_names_generically() -> None:
    assert webhook_event_name(EventType.CREATED) == "payment.created"
    assert webhook_event_name("com.gyroscops.payment.refunded") == "payment.refunded"
    assert subscribed(["payment.created"], EventType.CREATED)
    assert not subscribed(["payment.created"], EventType.UPDATED)
    assert subscribed(["*"], "com.gyroscops.payment.refunded")


@pytest.mark.parametrize("url", [
    "http://example.com/hook",  # not https
    "ftp://example.com/hook",
    "https://user:pw@example.com/hook",
    "https://example.com/hook#x",
    "https:///hook",
    "https://exa mple.com/",
    "https://example.com:99999/",
    "https://" + "a" * 3000 + ".com/",
    "javascript:alert(1)",
])
def test_urls_refused_by_syntax(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        parse_target(url, allow_private=False)


def test_a_good_url_and_its_port() -> None:
    target = parse_target("https://Example.com./hook?x=1", allow_private=False)
    assert (target.host, target.port, target.scheme) == ("example.com", 443, "https")
    assert parse_target("http://127.0.0.1:8080/h", allow_private=True).port == 8080


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
    "0.0.0.0", "::", "100.64.0.1", "100.100.100.200", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "fe80::1", "fc00::1", "fd00:ec2::254", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "64:ff9b::7f00:1", "2002:7f00:1::", "198.18.0.1", "192.0.2.1", "2001:db8::1",
])
def test_addresses_that_may_not_receive_webhooks(address: str) -> None:
    assert refused_reason(address) is not None
    with pytest.raises(UnsafeUrl, match="resolves to") as refused:
        check_addresses("h.example", [address], allow_private=False)
    assert address not in str(refused.value)  # no internal address echoed


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_reason(address) is None


def test_one_bad_address_among_good_ones_refuses_the_host() -> None:
    with pytest.raises(UnsafeUrl, match="loopback"):
        check_addresses("rebind.example", ["8.8.8.8", "127.0.0.1"], allow_private=False)
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_addresses("none.example", [], allow_private=False)
    assert check_addresses("local", ["127.0.0.1"], allow_private=True) == ["127.0.0.1"]


def test_the_signature_is_stripes_scheme() -> None:
    body = b'{"id":"e1"}'
    header = signature_header(["whsec_a"], 1700000000, body)
    expected = hmac.new(b"whsec_a", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature("whsec_a", header, body, now=1700000010)
    assert not verify_signature("whsec_b", header, body, now=1700000010)
    assert not verify_signature("whsec_a", header, body + b" ", now=1700000010)
    assert not verify_signature("whsec_a", header, body, now=1700009999)  # too old: a replay


def test_during_a_rotation_either_secret_verifies() -> None:
    header = signature_header(["whsec_new", "whsec_old"], 1700000000, b"x")
    assert header.count("v1=") == 2
    assert verify_signature("whsec_new", header, b"x", now=1700000000)
    assert verify_signature("whsec_old", header, b"x", now=1700000000)


@given(attempt=st.integers(1, 200), unit=st.floats(0, 1, exclude_max=True))
def test_backoff_grows_to_its_cap_with_jitter_in_the_upper_half(attempt: int, unit: float) -> None:
    wait = backoff_seconds(attempt, unit, base=10, cap=3600)
    ceiling = min(3600, 10 * 2 ** (attempt - 1))
    assert ceiling / 2 <= wait <= ceiling


def test_every_event_type_of_the_contract_can_be_subscribed_to() -> None:
    from services.webhooks.domain import known_event_names

    assert set(known_event_names()) == {"*", *(f"payment.{t.short}" for t in EventType)}


def test_the_documented_verification_examples_verify_a_delivery(tmp_path) -> None:  # noqa: ANN001
    """docs/webhooks.md's Python function and openssl line, run on a signed body."""
    import re
    import shutil
    import subprocess
    import time
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    python = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    body, now = b'{"id":"ev-1","paymentversion":2}', int(time.time())
    header = signature_header(["whsec_old", "whsec_new"], now, body)
    scope: dict = {}
    exec(python, scope)  # noqa: S102 - the documentation's own example
    assert scope["verify"]("whsec_new", header, body) and not scope["verify"]("whsec_x", header, body)
    if shutil.which("openssl"):
        line = re.search(r"```bash\n(printf .*?)\n", doc, re.S).group(1)
        (tmp_path / "body.json").write_bytes(body)
        digest = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True,
                                env={"T": str(now), "SECRET": "whsec_old", "PATH": "/usr/bin:/bin"}).stdout.strip()
        assert f"v1={digest}" in header
