"""Tokens of an identity provider, verified against its JWKS served locally (issue 11.6)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.query.entrypoints.http.app import create_app

ISSUER, AUDIENCE = "https://idp.test/", "payments-api"


class IdP:
    """A key set that the test can rotate, as an identity provider does."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0

    def add(self, kid: str, key: Any) -> None:  # noqa: ANN401
        self.keys[kid] = key

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            public = key.public_key()
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
            elif isinstance(key, ec.EllipticCurvePrivateKey):
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
            else:
                jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def app(self) -> Starlette:
        async def jwks(request: Any) -> JSONResponse:  # noqa: ANN401
            self.fetches += 1
            return JSONResponse(self.jwks())

        return Starlette(routes=[Route("/.well-known/jwks.json", jwks)])


def token(key: Any, kid: str, alg: str, **claims: Any) -> str:  # noqa: ANN401
    body = {"org": "org-a", "scope": "payments:read", "iss": ISSUER, "aud": AUDIENCE,
            "exp": int(time.time()) + 60} | claims
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def idp(serve) -> AsyncIterator[tuple[IdP, str]]:  # noqa: ANN001
    provider = IdP()
    async with serve(provider.app()) as base_url:
        yield provider, f"{base_url}/.well-known/jwks.json"


@pytest.fixture
async def http(qsettings, runtime, idp, serve) -> AsyncIterator[httpx.AsyncClient]:  # noqa: ANN001
    _, url = idp
    settings = qsettings.model_copy(update={"jwt_jwks_url": url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
                                            "jwt_jwks_min_refresh_seconds": 0.0})
    async with serve(create_app(settings, runtime)) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        yield c


async def _status(http: httpx.AsyncClient, bearer: str) -> int:
    response = await http.get("/v1/payments", headers={"Authorization": f"Bearer {bearer}"})
    assert response.headers["content-type"].startswith("application/json" if response.status_code == 200
                                                        else "application/problem+json"), response.text
    return response.status_code


async def test_tokens_signed_by_a_listed_key_are_accepted_and_others_refused(idp, http) -> None:  # noqa: ANN001
    provider, _ = idp
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    provider.add("rsa-1", rsa_key)
    provider.add("ec-1", ec_key)
    provider.add("ed-1", ed_key)
    assert await _status(http, token(rsa_key, "rsa-1", "RS256")) == 200
    assert await _status(http, token(ec_key, "ec-1", "ES256")) == 200
    assert await _status(http, token(ed_key, "ed-1", "EdDSA")) == 200
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert await _status(http, token(stranger, "rsa-1", "RS256")) == 401  # listed kid, other key
    assert await _status(http, token(stranger, "unknown", "RS256")) == 401
    assert await _status(http, token(rsa_key, "rsa-1", "RS256", aud="another-api")) == 401
    assert await _status(http, token(rsa_key, "rsa-1", "RS256", iss="https://evil.test/")) == 401
    assert await _status(http, token(rsa_key, "rsa-1", "RS256", exp=int(time.time()) - 120)) == 401
    assert await _status(http, token(rsa_key, "rsa-1", "RS256", scope=7)) == 401
    # The HS256 development secret is not accepted once an identity provider is configured.
    assert await _status(http, jwt.encode({"org": "org-a", "scope": "payments:read", "iss": ISSUER, "aud": AUDIENCE,
                                           "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256",
                                          headers={"kid": "rsa-1"})) == 401


async def test_a_rotated_key_is_picked_up(idp, http) -> None:  # noqa: ANN001
    provider, _ = idp
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.add("k1", old)
    assert await _status(http, token(old, "k1", "RS256")) == 200
    fetched = provider.fetches
    assert await _status(http, token(old, "k1", "RS256")) == 200
    assert provider.fetches == fetched  # cached
    new = ec.generate_private_key(ec.SECP256R1())
    provider.keys = {}
    provider.add("k2", new)
    assert await _status(http, token(new, "k2", "ES256")) == 200  # unknown kid: the set is fetched again
    assert provider.fetches == fetched + 1


async def test_unknown_kids_refresh_the_key_set_at_most_once_per_bound(idp, qsettings, runtime, serve) -> None:  # noqa: ANN001
    provider, url = idp
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.add("k1", key)
    settings = qsettings.model_copy(update={"jwt_jwks_url": url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE})
    async with serve(create_app(settings, runtime)) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert await _status(http, token(key, "k1", "RS256")) == 200
        for i in range(20):
            assert await _status(http, token(key, f"random-{i}", "RS256")) == 401
    assert provider.fetches == 1
