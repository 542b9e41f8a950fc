"""Bearer-JWT authentication of both APIs: the organization always comes from the token's
``org`` claim (never a body), the scopes from ``scope``. Production verifies the identity
provider's tokens against its JWKS (``PAYMENTS_JWT_JWKS_URL``), local use a shared HS256
secret; :class:`Authenticate` checks the token before anything reads the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.http import ProblemError, problem_response, retry_after
from shared.settings import DEV_JWT_SECRET, Settings, get_settings

SCOPE_READ = "payments:read"
SCOPE_WRITE = "payments:write"
SCOPE_WEBHOOKS = "payments:webhooks"  # manage the organization's webhook endpoints (docs/webhooks.md)
KNOWN_SCOPES = (SCOPE_READ, SCOPE_WRITE, SCOPE_WEBHOOKS)
PRINCIPAL_SCOPE_KEY = "payments.principal"


@dataclass(frozen=True)
class Principal:
    org: str
    scopes: frozenset[str]
    subject: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def actor(self) -> str:
        """Who the commands of this token are recorded as (events' ``actor``): its ``sub``,
        or ``org:<org>`` for a token that names no subject."""
        return self.subject or f"org:{self.org}"


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
    """A token signed with the shared secret (local use, tests, ``payments token``)."""
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


def uses_dev_secret(settings: Settings) -> bool:
    """True if the built-in (public) secret signs tokens or cursors."""
    if settings.jwt_secret != DEV_JWT_SECRET:
        return False
    return not settings.jwt_jwks_url or not settings.cursor_secret


def cursor_key(settings: Settings) -> bytes:
    """The key that signs search cursors: its own setting, or derived from the JWT secret."""
    if settings.cursor_secret:
        return settings.cursor_secret.encode()
    return hmac.new(settings.jwt_secret.encode(), b"payments search cursors", hashlib.sha256).digest()


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """The ``scope`` claim: a space-separated string or a list of strings; absent is none."""
    raw = claims.get("scope", "")
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return frozenset(raw)
    raise AuthError("the 'scope' claim must be a space-separated string or a list of strings")


def principal_of(claims: dict[str, Any]) -> Principal:
    org = claims.get("org")
    if not isinstance(org, str) or not org or "\x00" in org:
        raise AuthError("the token has no 'org' claim")
    subject = claims.get("sub")
    if subject is not None and (not isinstance(subject, str) or "\x00" in subject):
        raise AuthError("the 'sub' claim must be a string")
    return Principal(org=org, scopes=scopes_of(claims), subject=subject)


class JwksKeys:
    """The identity provider's signing keys, fetched from its JWKS URL and cached."""

    def __init__(self, url: str, *, cache_seconds: float, min_refresh_seconds: float, timeout_seconds: float) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        stale = now - self._fetched_at > self.cache_seconds
        unknown = kid not in self._keys and now - self._fetched_at >= self.min_refresh_seconds
        if stale or unknown:  # a rotated key shows up as an unknown kid
            await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise AuthError(f"no key {kid!r} in the identity provider's key set") from None

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < min(1.0, self.min_refresh_seconds):
                return  # another request fetched while this one waited for the lock
            try:
                async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
                    response = await http.get(self.url)
                    response.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(response.json()).keys
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                if not self._keys:
                    raise ProblemError(503, "Service Unavailable", "the identity provider's key set cannot be read",
                                       type_="jwks-unavailable", headers=retry_after("jwks-unavailable")) from exc
                return  # keep the keys we have; retried after min_refresh_seconds
            finally:
                self._fetched_at = time.monotonic()
            self._keys = {k.key_id: k for k in keys if k.key_id and k.public_key_use in (None, "sig")}


# A verified token is remembered (by its whole text, signature included) for at most
# this long and never past its exp, so a client reusing its token is not verified again
# on every request (its share of the API's CPU: docs/benchmarks.md). Bounded: the least
# recently used are forgotten first.
VERIFIED_SECONDS = 60.0
VERIFIED_TOKENS = 4096


class Authenticator:
    """Verifies tokens with the JWKS (when configured) or the shared secret."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jwks = (JwksKeys(settings.jwt_jwks_url, cache_seconds=settings.jwt_jwks_cache_seconds,
                              min_refresh_seconds=settings.jwt_jwks_min_refresh_seconds,
                              timeout_seconds=settings.jwt_jwks_timeout_seconds)
                     if settings.jwt_jwks_url else None)
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def principal(self, token: str) -> Principal:
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None:
            until, principal = remembered
            if now < until:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        claims = await self._verify(token)
        principal = principal_of(claims)
        self._verified[token] = (min(float(claims["exp"]), now + VERIFIED_SECONDS), principal)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> dict[str, Any]:
        key: Any = self.settings.jwt_secret
        algorithms = [self.settings.jwt_algorithm]
        if self.jwks is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.InvalidTokenError as exc:
                raise AuthError(f"invalid token: {exc}") from None
            if not isinstance(kid, str) or not kid:
                raise AuthError("invalid token: its header names no 'kid'")
            key = await self.jwks.key(kid)
            algorithms = list(self.settings.jwt_jwks_algorithms)
        try:
            claims = jwt.decode(
                token, key, algorithms=algorithms,
                issuer=self.settings.jwt_issuer or None, audience=self.settings.jwt_audience or None,
                options={"require": ["exp", "org"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        return claims


def authenticator(app: FastAPI) -> Authenticator:
    """The app's authenticator (one per app: it holds the JWKS cache)."""
    found = getattr(app.state, "authenticator", None)
    if found is None:
        found = app.state.authenticator = Authenticator(getattr(app.state, "settings", None) or get_settings())
    return found


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("missing Authorization header: send 'Authorization: Bearer <JWT>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <JWT>'")
    return token.strip()


class Authenticate:
    """ASGI middleware: requests under ``prefix`` need a valid token before the app (and
    so the body parser) runs; the principal is left in the scope for the routes."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            headers = dict(scope["headers"])
            raw = headers.get(b"authorization")
            try:
                token = bearer_token(raw.decode("latin-1") if raw is not None else None)
                scope[PRINCIPAL_SCOPE_KEY] = await authenticator(scope["app"]).principal(token)
            except ProblemError as exc:
                response = problem_response(exc.status, exc.title, exc.detail, type_=exc.type,
                                            instance=scope["path"], headers=exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def principal_from_request(request: Request) -> Principal:
    found = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if found is not None:
        return found
    token = bearer_token(request.headers.get("authorization"))
    return await authenticator(request.app).principal(token)


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: the caller's principal, which must hold ``scope``."""

    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
    # request (docs/benchmarks.md).
    async def dependency(principal: Principal = Depends(principal_from_request)) -> Principal:
        if not principal.has(scope):
            raise ProblemError(403, "Forbidden", f"this operation needs the '{scope}' scope", type_="forbidden")
        return principal

    return dependency

