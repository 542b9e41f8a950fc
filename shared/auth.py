"""Bearer-JWT authentication shared by both HTTP APIs.

Tokens carry ``org`` (the organization every request is scoped to) and ``scope``
(space-separated, or a list: ``payments:write``, ``payments:read``). The organization
always comes from the token, never from a request body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from fastapi import Depends, Request

from shared.http import ProblemError
from shared.settings import Settings, get_settings

SCOPE_READ = "payments:read"
SCOPE_WRITE = "payments:write"
KNOWN_SCOPES = (SCOPE_READ, SCOPE_WRITE)


@dataclass(frozen=True)
class Principal:
    org: str
    scopes: frozenset[str]
    subject: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class AuthError(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            401, "Unauthorized", detail, type_="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="payments"'},
        )


def mint_token(
    org: str,
    scopes: Iterable[str],
    *,
    settings: Settings | None = None,
    subject: str | None = None,
    ttl_seconds: int = 24 * 3600,
) -> str:
    settings = settings or get_settings()
    now = int(time.time())
    claims: dict[str, object] = {"org": org, "scope": " ".join(scopes), "iat": now, "exp": now + ttl_seconds}
    if subject:
        claims["sub"] = subject
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def decode_token(token: str, settings: Settings) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            options={"require": ["exp", "org"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    org = claims.get("org")
    if not isinstance(org, str) or not org:
        raise AuthError("the token has no 'org' claim")
    raw = claims.get("scope", "")
    scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw or []]
    return Principal(org=org, scopes=frozenset(scopes), subject=claims.get("sub"))


def principal_from_request(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError("missing Authorization header: send 'Authorization: Bearer <JWT>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <JWT>'")
    settings = getattr(request.app.state, "settings", None) or get_settings()
    return decode_token(token.strip(), settings)


def require_scope(scope: str) -> Callable[..., Principal]:
    """FastAPI dependency: the caller's principal, which must hold ``scope``."""

    def dependency(principal: Principal = Depends(principal_from_request)) -> Principal:
        if not principal.has(scope):
            raise ProblemError(403, "Forbidden", f"this operation needs the '{scope}' scope", type_="forbidden")
        return principal

    return dependency
