"""Reading finished spans in tests: an in-memory exporter installed the way a process installs
its exporter (shared/tracing_setup.py), and the span tree questions the tests ask.

Spans are compared by their W3C ids as hex strings, so the same helpers read the SDK's
in-memory spans and the spans an OTLP receiver decoded (tests/support/otlp_receiver.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing_setup


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    start: int = 0  # ns since the epoch
    end: int = 0
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id)
    attributes: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


def of_sdk(span: ReadableSpan, service: str = "in-process") -> Span:
    ctx = span.get_span_context()
    return Span(
        name=span.name, trace_id=f"{ctx.trace_id:032x}", span_id=f"{ctx.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent else None, service=service, start=span.start_time or 0,
        end=span.end_time or 0,
        links=tuple((f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links),
        attributes=dict(span.attributes or {}),
    )


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, every finished span kept in memory; off again after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing_setup.install(provider)
    try:
        yield exporter
    finally:
        tracing_setup.uninstall()
        provider.shutdown()


def traceparent(trace_id: str, span_id: str = "00f067aa0ba902b7") -> str:
    return f"00-{trace_id}-{span_id}-01"


def trace_id_of(traceparent_value: str) -> str:
    return traceparent_value.split("-")[1]


def in_trace(spans: Iterable[Span], trace_id: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


def ancestry(span: Span, spans: Iterable[Span]) -> list[Span]:
    """``span`` and its parents up to the first one not among ``spans``, innermost first."""
    by_id = {s.span_id: s for s in spans}
    chain = [span]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])  # type: ignore[index]
    return chain


def reached(spans: Iterable[Span], trace_id: str) -> list[Span]:
    """Spans in the trace, and spans of other traces (a batch, a projection) that link to it,
    or whose ancestor does."""
    spans = list(spans)

    def links_here(span: Span) -> bool:
        return any(t == trace_id for t, _ in span.links)

    return [s for s in spans if s.trace_id == trace_id or any(links_here(a) for a in ancestry(s, spans))]
