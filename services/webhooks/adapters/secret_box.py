"""Signing secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from
PAYMENTS_WEBHOOKS_SECRET_KEY, so a dump of the database does not reveal them; new ones
are random, shown to the client once."""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class SecretBox:
    def __init__(self, key: str) -> None:
        # Any string of enough entropy: Fernet wants 32 url-safe base64 bytes.
        derived = hashlib.sha256(b"payments webhooks secrets\x00" + key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(sealed)).decode()
        except InvalidToken:
            raise ValueError("a webhook secret cannot be decrypted: PAYMENTS_WEBHOOKS_SECRET_KEY changed?") from None
