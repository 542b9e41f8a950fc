"""Consistency tokens, read-your-writes across the two services: a command result names
the ``(payment id, version)`` pairs it wrote, signed so that clients can neither forge
nor alter them, deflated because it travels in headers and query strings. Made and
checked only here (format: docs/design.md section 11); both services share the secret.
Pure: safe in workflows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from shared.payment import PaymentSnapshot

PREFIX = "ct1."
MAC_BYTES = 16
# Bounds on what a client can make a read wait for (a batch writes at most 1000 payments).
MAX_WRITES = 1000
MAX_TOKEN_CHARS = 64 * 1024
MAX_TOKENS_PER_READ = 100


class InvalidConsistencyToken(ValueError):
    """Malformed, forged, or too large a token (answer 400)."""


class ForeignConsistencyToken(LookupError):
    """The token was issued to another organization (answer 404, revealing nothing)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _deflate(raw: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header/checksum
    return packer.compress(raw) + packer.flush()


def _inflate(packed: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15)
    raw = unpacker.decompress(packed, MAX_TOKEN_CHARS * 4)  # bounded: no decompression bomb
    if unpacker.unconsumed_tail:
        raise ValueError("consistency token content too large")
    return raw


@dataclass(frozen=True)
class Writes:
    """What a read must reflect: the newest version wanted of each payment of one org."""

    organization_id: str
    versions: tuple[tuple[str, int], ...]  # sorted by payment id, one entry per payment

    @classmethod
    def of(cls, organization_id: str, pairs: Iterable[tuple[str, int]]) -> Writes:
        newest: dict[str, int] = {}
        for payment_id, version in pairs:
            newest[payment_id] = max(version, newest.get(payment_id, 0))
        if len(newest) > MAX_WRITES:
            raise InvalidConsistencyToken(f"a consistency token names at most {MAX_WRITES} payments")
        return cls(organization_id, tuple(sorted(newest.items())))

    def digest(self) -> str:
        """Stable short name of these writes (cache markers)."""
        raw = json.dumps([self.organization_id, self.versions], separators=(",", ":")).encode()
        return hashlib.blake2b(raw, digest_size=12).hexdigest()


def combine(writes: Iterable[Writes]) -> Writes | None:
    """One set of writes covering all of them (newest version per payment); None if empty.
    All must belong to one organization (else :class:`ForeignConsistencyToken`)."""
    items = list(writes)
    if not items:
        return None
    orgs = {w.organization_id for w in items}
    if len(orgs) > 1:
        raise ForeignConsistencyToken("consistency tokens of different organizations cannot be combined")
    return Writes.of(items[0].organization_id, (pair for w in items for pair in w.versions))


class ConsistencyTokens:
    """Issues and verifies tokens with one server-side secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the consistency token secret must not be empty")
        self._key = secret.encode()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, (PREFIX + body).encode(), hashlib.sha256).digest()[:MAC_BYTES])

    def encode(self, writes: Writes) -> str:
        payload = json.dumps({"o": writes.organization_id, "w": [list(p) for p in writes.versions]},
                             separators=(",", ":")).encode()
        body = _b64(_deflate(payload))
        return f"{PREFIX}{body}.{self._mac(body)}"

    def issue(self, payments: Iterable[PaymentSnapshot]) -> str | None:
        """The token of a command result: the payments it wrote (None if it wrote none)."""
        found = list(payments)
        if not found:
            return None
        combined = combine(Writes.of(p.organization_id, [(p.id, p.version)]) for p in found)
        assert combined is not None
        return self.encode(combined)

    def decode(self, token: str) -> Writes:
        """The writes a token names; :class:`InvalidConsistencyToken` unless it is one we issued."""
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX) or token.count(".") != 2:
            raise InvalidConsistencyToken("not a consistency token (use the Consistency-Token of a command result)")
        body, mac = token.removeprefix(PREFIX).split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise InvalidConsistencyToken("the consistency token was altered or issued by another deployment")
        try:
            data = json.loads(_inflate(_unb64(body)))
            org, pairs = data["o"], [(str(pid), int(v)) for pid, v in data["w"]]
        except (ValueError, TypeError, KeyError, zlib.error):
            raise InvalidConsistencyToken("the consistency token's content is malformed") from None
        if not isinstance(org, str) or not pairs or any(v < 1 for _, v in pairs):
            raise InvalidConsistencyToken("the consistency token's content is malformed")
        return Writes.of(org, pairs)

    def required(self, tokens: Iterable[str], organization_id: str) -> Writes | None:
        """The combined writes of ``tokens`` for a reader of ``organization_id``.

        A token of another organization raises :class:`ForeignConsistencyToken` without
        saying anything about that organization's payments."""
        given = list(tokens)
        if len(given) > MAX_TOKENS_PER_READ:
            raise InvalidConsistencyToken(f"a read takes at most {MAX_TOKENS_PER_READ} consistency tokens")
        combined = combine(self.decode(t) for t in given)
        if combined is not None and combined.organization_id != organization_id:
            raise ForeignConsistencyToken("this consistency token was not issued to your organization")
        return combined
