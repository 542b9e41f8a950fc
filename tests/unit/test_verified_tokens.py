"""Authenticator remembers verified tokens: never past their exp, never for another token,
bounded in count."""

import asyncio

import jwt
import pytest

import shared.auth as auth
from shared.auth import SCOPE_READ, Authenticator, AuthError, mint_token
from shared.settings import Settings

SETTINGS = Settings()


def _verifications(authn: Authenticator) -> list[str]:
    calls: list[str] = []
    verify = authn._verify

    async def counted(token: str):  # noqa: ANN202
        calls.append(token)
        return await verify(token)

    authn._verify = counted  # type: ignore[method-assign]
    return calls


def test_a_reused_token_is_verified_once_and_each_token_keeps_its_own_principal() -> None:
    authn = Authenticator(SETTINGS)
    calls = _verifications(authn)
    a, b = mint_token("org-a", [SCOPE_READ], settings=SETTINGS), mint_token("org-b", [SCOPE_READ], settings=SETTINGS)

    async def run() -> list[str]:
        return [(await authn.principal(t)).org for t in (a, a, b, a, b)]

    assert asyncio.run(run()) == ["org-a", "org-a", "org-b", "org-a", "org-b"]
    assert calls == [a, b]


def test_a_remembered_token_is_verified_again_at_its_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    authn = Authenticator(SETTINGS)
    calls = _verifications(authn)
    token = mint_token("org-a", [SCOPE_READ], settings=SETTINGS, ttl_seconds=5)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    asyncio.run(authn.principal(token))
    asyncio.run(authn.principal(token))
    assert len(calls) == 1
    monkeypatch.setattr(auth.time, "time", lambda: exp)  # PyJWT keeps its own clock: it still accepts
    asyncio.run(authn.principal(token))
    assert len(calls) == 2, "served from memory at its exp"


def test_an_expired_token_is_refused() -> None:
    token = mint_token("org-a", [SCOPE_READ], settings=SETTINGS, ttl_seconds=-1)
    with pytest.raises(AuthError, match="expired"):
        asyncio.run(Authenticator(SETTINGS).principal(token))


def test_a_forged_token_is_never_served_from_memory() -> None:
    authn = Authenticator(SETTINGS)
    token = mint_token("org-a", [SCOPE_READ], settings=SETTINGS)
    asyncio.run(authn.principal(token))
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(AuthError):
        asyncio.run(authn.principal(forged))


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 3)
    authn = Authenticator(SETTINGS)
    tokens = [mint_token(f"org-{i}", [SCOPE_READ], settings=SETTINGS) for i in range(5)]
    for token in tokens:
        asyncio.run(authn.principal(token))
    assert list(authn._verified) == tokens[2:]
