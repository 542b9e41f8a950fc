"""Hypothesis strategies: text and metadata the payment content contract accepts, and
histories of payments delivered with duplicates, replays and reordering."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import strategies as st

from shared.events import PaymentEvent
from shared.payment import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_NUMBER,
    MIN_NUMBER,
)
from tests.support.builders import BASE, history

# Text the payment content contract accepts: any Unicode scalar but NUL (surrogates are not scalars).
contract_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def contract_texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(contract_chars, max_size=max_size)


contract_keys = st.text(contract_chars, min_size=1, max_size=MAX_METADATA_KEY_LENGTH).filter(
    lambda k: not k.startswith("$") and "." not in k)
contract_values = st.one_of(
    st.none(), st.booleans(), st.integers(MIN_NUMBER, MAX_NUMBER),
    st.floats(min_value=float(MIN_NUMBER), max_value=float(MAX_NUMBER + 1), exclude_max=True),
    contract_texts(MAX_METADATA_VALUE_LENGTH),
)
# Bounded so that the total size stays within MAX_METADATA_BYTES (50 short keys; the byte
# limit has its own tests).
contract_metadata = st.dictionaries(
    contract_keys, st.one_of(contract_values, contract_texts(60)), max_size=MAX_METADATA_KEYS).filter(
    lambda m: sum(len(k) + len(str(v)) for k, v in m.items()) * 4 < 16000)



@st.composite
def histories(draw: st.DrawFn, max_payments: int = 6) -> list[list[PaymentEvent]]:
    count = draw(st.integers(1, max_payments))
    result = []
    for i in range(count):
        steps = draw(st.lists(st.tuples(st.sampled_from(["update", "status"]), st.integers(1, 5000)),
                              min_size=1, max_size=5))
        # Payment ids are per organization: p0 exists in both, with independent lives.
        result.append(history(
            f"p{i // 2}", ("org-a", "org-b")[i % 2],
            BASE + timedelta(hours=draw(st.integers(0, 3))), draw(st.sampled_from(["EUR", "JPY"])),
            steps, delete=draw(st.booleans()),
        ))
    return result


@st.composite
def deliveries(draw: st.DrawFn, max_payments: int = 6) -> tuple[list[list[PaymentEvent]], list[list[PaymentEvent]]]:
    """(histories, batches): every event delivered at least once, with duplicates, replays
    of whole prefixes and arbitrary reordering, cut into batches."""
    lives = draw(histories(max_payments))
    events = [e for life in lives for e in life]
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    replay_upto = draw(st.integers(0, len(events)))
    stream = draw(st.permutations(events + extra)) + events[:replay_upto]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        if cut > start:
            batches.append(stream[start:cut])
            start = cut
    return lives, batches
