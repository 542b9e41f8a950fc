"""Pure decisions of the DLQ tooling (services/query/adapters/dlq.py): identity, selection, no redrive loop."""

from __future__ import annotations

import json

from services.query.adapters.dlq import DeadLetter, latest, redrive_headers, select
from shared.dlq import REDRIVE_HEADER, dlq_headers


def record(offset: int, value: bytes, *, redrives: int = 0, key: bytes = b"p1", ts: int | None = None) -> DeadLetter:
    original = [("trace", b"t")] + ([(REDRIVE_HEADER, str(redrives).encode())] if redrives else [])
    headers = dlq_headers("invalid: x", "payments.events", 0, offset, "payments-projector", original)
    return DeadLetter(0, offset, ts if ts is not None else offset, key, value, tuple(headers))


def event(eid: str, subject: str = "p1") -> bytes:
    return json.dumps({"id": eid, "subject": subject, "organizationid": "org-a"}).encode()


def test_identity_is_the_event_id_or_a_digest_that_survives_a_redrive():
    assert record(0, event("e1")).id == "e1"
    junk, junk_again = record(1, b"{not json"), record(9, b"{not json", redrives=1)
    assert junk.id.startswith("#") and junk.id == junk_again.id
    assert junk.id != record(2, b"{other").id


def test_redrive_selects_the_newest_record_of_each_event_in_order_and_never_loops():
    records = [record(0, event("e1")), record(1, event("e2", "p2"), key=b"p2"), record(2, event("e3")),
               record(3, event("e1"), redrives=1)]  # e1 failed again after a redrive
    chosen, skipped = select(records, everything=True)
    assert [r.id for r in chosen] == ["e2", "e3"] and [r.id for r in skipped] == ["e1"]
    chosen, _ = select(records, everything=True, again=True)
    assert [r.id for r in chosen] == ["e2", "e3", "e1"]
    assert [r.id for r in select(records, payment_ids=["p2"])[0]] == ["e2"]
    assert [r.id for r in select(records, event_ids=["e3"])[0]] == ["e3"]
    assert select(records)[0] == []
    assert [r.offset for r in latest(records)] == [1, 2, 3]


def test_redrive_headers_keep_the_producers_and_count_the_redrives():
    once = dict(redrive_headers(record(0, event("e1"))))
    assert once == {"trace": b"t", REDRIVE_HEADER: b"1"}
    assert dict(redrive_headers(record(0, event("e1"), redrives=1)))[REDRIVE_HEADER] == b"2"
    back = dlq_headers("still bad", "payments.events", 1, 7, "g", list(redrive_headers(record(0, event("e1")))))
    assert dict(back)[REDRIVE_HEADER] == b"1" and dict(back)["dlq-reason"] == b"still bad"


def test_a_dead_letter_keeps_the_original_headers_but_its_hop_trace_context():
    """The dead-letter record's own traceparent is the hop that wrote it (added by the Kafka
    instrumentation): a copied one would make the first header another record's."""
    original = [("content-type", b"application/cloudevents+json"), ("traceparent", b"00-a-b-01"),
                ("tracestate", b"k=v")]
    headers = dlq_headers("refused", "payments.events", 0, 1, "g", original)
    assert [k for k, _ in headers if not k.startswith("dlq-")] == ["content-type"]
