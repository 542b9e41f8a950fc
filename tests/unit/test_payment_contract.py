"""The payment content contract (shared/payment.py): what the edge accepts, the read
model stores and docs/events.schema.json describes are the same set."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import bson
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.command.entrypoints.bodies import CreatePaymentRequest, UpdatePaymentRequest
from services.command.entrypoints.http.schemas import BatchCreateRequest
from services.query.domain import payment_document
from shared.events import EventType, InvalidEvent, new_event, parse_event
from shared.payment import MAX_METADATA_BYTES, MAX_NUMBER, MIN_NUMBER
from tests.support.builders import snapshot
from tests.support.strategies import contract_metadata, contract_texts

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "events.schema.json").read_text())
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _event_json(metadata: dict, description: str = "", user_id: str | None = "u-1") -> dict:
    payment = snapshot("p-1", user_id=user_id).model_copy(update={"metadata": metadata, "description": description})
    return json.loads(new_event(EventType.CREATED, payment, time=NOW).to_json_bytes())


@settings(max_examples=200, deadline=None)
@given(metadata=contract_metadata, description=contract_texts(1000))
def test_metadata_drawn_from_the_contract_is_accepted_and_always_storable(metadata, description):
    body = CreatePaymentRequest.model_validate({"amount": 1, "currency": "EUR", "metadata": metadata,
                                                "description": description})
    raw = json.dumps(_event_json(body.metadata, body.description), allow_nan=False)
    event = parse_event(raw)  # the projector's parse
    jsonschema.validate(json.loads(raw), SCHEMA)  # what a foreign producer would check
    bson.encode(payment_document(event, NOW))  # what MongoDB stores: raises on what it refuses


BEYOND_64_BITS = st.one_of(st.integers(max_value=MIN_NUMBER - 1), st.integers(min_value=MAX_NUMBER + 1))
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
WITH_NUL = st.builds(lambda a, b: a + "\x00" + b, contract_texts(10), contract_texts(10))
LONE_SURROGATE = st.sampled_from(["\ud800", "a\udfffb"])
OUTSIDE = st.one_of(
    st.builds(lambda v: {"k": v}, st.one_of(BEYOND_64_BITS, NOT_FINITE, WITH_NUL, LONE_SURROGATE)),
    st.builds(lambda k: {k: 1}, st.one_of(WITH_NUL, LONE_SURROGATE)),
    st.builds(lambda n: {f"k{i}": i for i in range(n)}, st.integers(51, 80)),
    st.builds(lambda n: {"k": "v" * n}, st.integers(501, 2000)),
    st.builds(lambda n: {f"k{i}": "é" * 300 for i in range(n)}, st.integers(28, 50)),  # > MAX_METADATA_BYTES
    st.builds(lambda v: {"k": v}, st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.none()))),
)


@settings(max_examples=200, deadline=None)
@given(metadata=OUTSIDE)
def test_metadata_outside_the_contract_is_refused_at_the_edge_naming_the_field(metadata):
    for model, body in ((CreatePaymentRequest, {"amount": 1, "currency": "EUR", "metadata": metadata}),
                        (UpdatePaymentRequest, {"metadata": metadata}),
                        (BatchCreateRequest, {"items": [{"amount": 1, "currency": "EUR", "metadata": metadata}]})):
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        assert caught.value.errors()[0]["loc"][-1] == "metadata"
    event = _event_json({})
    event["data"]["payment"]["metadata"] = metadata
    with pytest.raises(InvalidEvent, match="metadata"):  # a foreign producer's event: the projector's parse
        parse_event(json.dumps(event, allow_nan=True))


@pytest.mark.parametrize("field", ["description", "user_id"])
@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_text_fields_refuse_nul_and_invalid_unicode(field, bad):
    with pytest.raises(ValidationError) as caught:
        CreatePaymentRequest.model_validate({"amount": 1, "currency": "EUR", field: bad})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_the_event_schema_refuses_what_the_contract_refuses():
    for metadata in ({"big": MAX_NUMBER + 1}, {"small": MIN_NUMBER - 1}, {"k": "a\x00"}, {"a\x00": 1},
                     {"$k": 1}, {"a.b": 1}, {f"k{i}": i for i in range(51)}, {"k": "v" * 501}, {"k": [1]}):
        event = _event_json({})
        event["data"]["payment"]["metadata"] = metadata
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(event, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_event_json({}, description="x\x00"), SCHEMA)


def test_the_byte_limit_counts_encoded_utf8():
    fits = {f"k{i}": "é" * 150 for i in range(40)}  # 6000 characters, ~12.5 kB
    assert 2 * sum(map(len, fits.values())) <= MAX_METADATA_BYTES
    CreatePaymentRequest.model_validate({"amount": 1, "currency": "EUR", "metadata": fits})
    with pytest.raises(ValidationError, match="bytes as JSON"):
        CreatePaymentRequest.model_validate({"amount": 1, "currency": "EUR",
                                             "metadata": {f"k{i}": "é" * 300 for i in range(30)}})  # 9000, > 16 kB


@pytest.mark.parametrize("attribute", ["id", "source"])
def test_envelope_text_follows_the_contract_too(attribute):
    for bad in ("e\x00", "\ud800"):
        event = _event_json({}) | {attribute: bad}
        with pytest.raises(InvalidEvent, match=attribute):
            parse_event(json.dumps(event))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_event_json({}) | {attribute: "e\x00"}, SCHEMA)
