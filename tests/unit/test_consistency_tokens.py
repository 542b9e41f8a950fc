"""Consistency tokens (shared/consistency.py): pure encode / decode / combine."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.consistency import (
    MAX_TOKEN_CHARS,
    MAX_TOKENS_PER_READ,
    MAX_WRITES,
    ConsistencyTokens,
    ForeignConsistencyToken,
    InvalidConsistencyToken,
    Writes,
    _deflate,
    combine,
)
from tests.support.builders import snapshot

TOKENS = ConsistencyTokens("a-test-secret-of-enough-length")
ids = st.text(alphabet="abcdefghij0123456789-_.:", min_size=1, max_size=20)
writes_lists = st.lists(st.tuples(ids, st.integers(min_value=1, max_value=2**31)), min_size=1, max_size=30)


@given(pairs=writes_lists)
def test_decode_returns_what_was_encoded(pairs: list[tuple[str, int]]) -> None:
    writes = Writes.of("org-a", pairs)
    assert TOKENS.decode(TOKENS.encode(writes)) == writes
    expected = {}
    for pid, version in pairs:
        expected[pid] = max(version, expected.get(pid, 0))
    assert dict(writes.versions) == expected


@given(first=writes_lists, second=writes_lists)
def test_combining_keeps_the_newest_version_of_each_payment(first: list, second: list) -> None:
    combined = combine([Writes.of("org-a", first), Writes.of("org-a", second)])
    assert combined == Writes.of("org-a", first + second)
    assert combine([Writes.of("org-a", first)]) == Writes.of("org-a", first)
    assert combine([]) is None


def test_issue_names_the_written_payments() -> None:
    token = TOKENS.issue([snapshot("p-1", "org-a", version=3), snapshot("p-2", "org-a")])
    assert token is not None and token.startswith("ct1.")
    assert TOKENS.required([token], "org-a") == Writes("org-a", (("p-1", 3), ("p-2", 1)))
    assert TOKENS.issue([]) is None


def test_several_tokens_combine_for_one_read() -> None:
    one = TOKENS.issue([snapshot("p-1", "org-a", version=1)])
    two = TOKENS.issue([snapshot("p-1", "org-a", version=2), snapshot("p-9", "org-a")])
    assert TOKENS.required([one, two], "org-a") == Writes("org-a", (("p-1", 2), ("p-9", 1)))
    assert TOKENS.required([], "org-a") is None


def test_a_token_of_another_organization_is_foreign() -> None:
    theirs = TOKENS.issue([snapshot("p-1", "org-b")])
    mine = TOKENS.issue([snapshot("p-2", "org-a")])
    with pytest.raises(ForeignConsistencyToken) as caught:
        TOKENS.required([theirs], "org-a")
    assert "p-1" not in str(caught.value) and "org-b" not in str(caught.value)
    with pytest.raises(ForeignConsistencyToken):
        TOKENS.required([mine, theirs], "org-a")


def _body(payload: dict | bytes) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(_deflate(raw)).decode().rstrip("=")


def _reencode(token: str, payload: dict) -> str:
    _, _, mac = token.removeprefix("ct1.").partition(".")
    return f"ct1.{_body(payload)}.{mac}"


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # altered MAC
    lambda t: _reencode(t, {"o": "org-a", "w": [["p-1", 99]]}),  # altered content, old MAC
    lambda t: "ct2." + t.removeprefix("ct1."),
    lambda t: t.replace(".", "", 1),
    lambda t: "",
    lambda t: "x" * 100_000,
])
def test_altered_or_malformed_tokens_are_invalid(mutate) -> None:  # noqa: ANN001
    token = TOKENS.issue([snapshot("p-1", "org-a")])
    with pytest.raises(InvalidConsistencyToken):
        TOKENS.required([mutate(token)], "org-a")


def test_another_deployments_token_is_invalid() -> None:
    token = ConsistencyTokens("another-deployment-secret!").issue([snapshot("p-1", "org-a")])
    with pytest.raises(InvalidConsistencyToken):
        TOKENS.decode(token)


@pytest.mark.parametrize("payload", [{"o": "org-a", "w": []}, {"o": "org-a", "w": [["p", 0]]},
                                     {"o": 5, "w": [["p", 1]]}, {"w": [["p", 1]]}, {"o": "org-a", "w": [["p"]]}])
def test_well_signed_but_malformed_content_is_invalid(payload: dict) -> None:
    body = _body(payload)
    forged = f"ct1.{body}.{TOKENS._mac(body)}"
    with pytest.raises(InvalidConsistencyToken):
        TOKENS.decode(forged)


@pytest.mark.parametrize("body", [
    base64.urlsafe_b64encode(b"not deflate at all").decode().rstrip("="),  # not deflate
    _body(b"\x00" * 10_000_000),  # a decompression bomb, 10 MB from a few KB
])
def test_well_signed_but_undecodable_content_is_invalid(body: str) -> None:
    assert len(body) < MAX_TOKEN_CHARS
    with pytest.raises(InvalidConsistencyToken):
        TOKENS.decode(f"ct1.{body}.{TOKENS._mac(body)}")


def test_a_default_batch_token_stays_small() -> None:
    token = TOKENS.issue([snapshot(str(uuid.uuid4()), "org-a") for _ in range(100)])
    assert len(token) < 3200


def test_bounds() -> None:
    with pytest.raises(InvalidConsistencyToken):
        Writes.of("org-a", [(f"p-{i}", 1) for i in range(MAX_WRITES + 1)])
    token = TOKENS.issue([snapshot("p-1", "org-a")])
    with pytest.raises(InvalidConsistencyToken):
        TOKENS.required([token] * (MAX_TOKENS_PER_READ + 1), "org-a")
    assert TOKENS.required([token] * MAX_TOKENS_PER_READ, "org-a") == Writes("org-a", (("p-1", 1),))


def test_digest_names_the_writes() -> None:
    assert Writes.of("org-a", [("p", 1)]).digest() == Writes.of("org-a", [("p", 1), ("p", 1)]).digest()
    assert Writes.of("org-a", [("p", 1)]).digest() != Writes.of("org-a", [("p", 2)]).digest()
    assert Writes.of("org-a", [("p", 1)]).digest() != Writes.of("org-b", [("p", 1)]).digest()


def test_the_facade_reads_accept_command_results_tokens_or_several() -> None:
    from services.command.commands import BulkCreateResult, BulkItemResult, CommandResult, Rejection
    from services.facade import tokens_of

    payment = snapshot("p-1", "org-a")
    token = TOKENS.issue([payment])
    result = CommandResult(command_id="c-1", payment=payment, consistency_token=token)
    empty_batch = BulkCreateResult(command_id="b-1", items=[
        BulkItemResult(index=0, rejection=Rejection(kind="conflict", detail="id taken"))])
    assert tokens_of(None) == [] and tokens_of(token) == [token] and tokens_of(result) == [token]
    assert tokens_of([result, token, empty_batch]) == [token, token]
    with pytest.raises(ValueError, match="no consistency token"):
        tokens_of(CommandResult(command_id="c-2", payment=payment))
