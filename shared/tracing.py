"""Tracing (OpenTelemetry, DESIGN section 8): one trace follows a command from its HTTP
request or Kafka command through Temporal, PostgreSQL, the outbox, Kafka and the projector.

A process traces when the standard ``OTEL_*`` variables ask for it (shared/tracing_setup.py);
otherwise nothing is installed and every helper here does nothing.

The trace context crosses what no library instruments in the CloudEvents
distributed-tracing extension (``traceparent`` / ``tracestate``): on a command (a
group-committed batch keeps each command's own), on its event in the outbox row's payload,
on the Kafka record (besides the W3C headers of that hop). Each place in the wings calls
one helper of this module.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "payments"
TRACE_FIELDS = ("traceparent", "tracestate")  # the CloudEvents distributed-tracing extension
# Probes, scrapes and the API documents are not requests worth a trace.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc",
                            "/docs/oauth2-redirect"})
UNTRACED_PREFIXES = ("/static-offline-docs/",)

Carrier = Mapping[str, str]
Headers = Sequence[tuple[str, bytes | None]]
M = TypeVar("M")

_W3C = TraceContextTextMapPropagator()  # the extension's format, whatever OTEL_PROPAGATORS says
_state: dict[str, Any] = {"provider": None, "instrumentors": []}


# --------------------------------------------------------------------------- set-up


def activate(provider: Any, instrumentors: Sequence[Any] = ()) -> None:
    """Trace with ``provider`` (shared/tracing_setup.py installs it with the instrumentations)."""
    _state.update(provider=provider, instrumentors=list(instrumentors))


def deactivate() -> list[Any]:
    """Stop tracing; returns the instrumentations to undo."""
    instrumentors = _state["instrumentors"]
    _state.update(provider=None, instrumentors=[])
    return instrumentors


def enabled() -> bool:
    return _state["provider"] is not None


def tracer() -> trace.Tracer:
    provider = _state["provider"]
    return provider.get_tracer(TRACER_NAME) if provider is not None else trace.NoOpTracer()


def fastapi_telemetry(*, requests: bool = True) -> dict[str, Any]:
    """``FastAPI(telemetry=...)``: FastAPI's own server spans (an incoming ``traceparent`` is
    their parent), without probes, scrapes and documents (none at all for an ops endpoint:
    ``requests=False``); never its own exporters or metrics (Prometheus has ours)."""
    off = {"metrics": False, "logs": False, "auto_configure": False}
    if not enabled() or not requests:
        return {**off, "tracing": False}
    return {**off, "tracer_provider": _state["provider"], "exclude": _untraced_request}


def _untraced_request(scope: MutableMapping[str, Any]) -> bool:
    path = scope.get("path", "")
    return path in UNTRACED_PATHS or path.startswith(UNTRACED_PREFIXES)


def temporal_interceptors() -> list[Any]:
    """Temporal's own tracing interceptor (client and worker): start, workflow, activity spans."""
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer())]


# --------------------------------------------------------------------------- contexts


def current_carrier() -> dict[str, str]:
    """The current span's context as ``traceparent`` (+ ``tracestate``), or ``{}``."""
    carrier: dict[str, str] = {}
    if enabled():
        _W3C.inject(carrier)
    return carrier


def with_trace(model: M) -> M:
    """A pydantic model with ``traceparent`` / ``tracestate`` fields (a command, a result
    event), carrying the current context unless it carries one already."""
    if not enabled() or "traceparent" not in type(model).model_fields or model.traceparent:  # type: ignore[attr-defined]
        return model
    carrier = current_carrier()
    return model.model_copy(update=carrier) if carrier else model  # type: ignore[attr-defined]


def carrier_of(obj: Any) -> dict[str, str]:
    """The ``traceparent`` / ``tracestate`` of a command, an event or a CloudEvent's dict."""
    get = obj.get if isinstance(obj, Mapping) else lambda name: getattr(obj, name, None)
    return {name: value for name in TRACE_FIELDS if isinstance(value := get(name), str)}


def cloudevent_carrier(raw: bytes | None) -> dict[str, str]:
    """The trace context in a CloudEvent's JSON (an outbox payload, a Kafka command)."""
    if not enabled() or not raw:
        return {}
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return carrier_of(payload) if isinstance(payload, dict) else {}


def headers_carrier(headers: Headers | None) -> dict[str, str]:
    """The W3C trace context in a Kafka record's headers (the hop that produced it)."""
    carrier = {}
    for key, value in headers or ():
        if key in TRACE_FIELDS and value is not None and key not in carrier:
            with contextlib.suppress(UnicodeDecodeError):
                carrier[key] = value.decode()
    return carrier


def record_carrier(headers: Headers | None, raw: bytes | None) -> dict[str, str]:
    """A consumed record's trace context: its W3C headers' (the hop that produced it), else
    its CloudEvent's ``traceparent``."""
    if not enabled():
        return {}
    hop = headers_carrier(headers)
    return hop if span_context(hop) else cloudevent_carrier(raw)


def span_context(carrier: Carrier) -> trace.SpanContext | None:
    """The remote span context of ``carrier``, or None if it has no valid one."""
    if not carrier:
        return None
    found = trace.get_current_span(_W3C.extract(carrier, context=otel_context.Context())).get_span_context()
    return found if found.is_valid else None


@contextlib.contextmanager
def _attached(ctx: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def _continuing(parent: trace.SpanContext | None) -> otel_context.Context:
    """A fresh context (nothing current, nothing suppressed) whose parent is ``parent``."""
    if parent is None:
        return otel_context.Context()
    return trace.set_span_in_context(trace.NonRecordingSpan(parent), otel_context.Context())


@contextlib.contextmanager
def resumed(carrier: Carrier) -> Iterator[None]:
    """Continue ``carrier``'s trace in this block, whatever context is current (with no valid
    context in ``carrier``, what the block traces starts a trace of its own)."""
    if not enabled():
        yield
        return
    with _attached(_continuing(span_context(carrier))):
        yield


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Background work (a poll, a probe, a retry timer): its database calls are no trace."""
    if not enabled():
        yield
        return
    with suppress_instrumentation():
        yield


def _links(carriers: Sequence[Carrier], **attributes: Any) -> list[Link]:
    return [Link(ctx, attributes or None) for c in carriers if (ctx := span_context(c)) is not None]


@contextlib.contextmanager
def batch_span(name: str, carriers: Sequence[Carrier], **attributes: Any) -> Iterator[Span | None]:
    """A span of its own trace (not any one member's), current in the block, linked to each
    member's context: a group-committed batch, the intake's batched creates."""
    if not enabled():
        yield None
        return
    with _attached(otel_context.Context()), tracer().start_as_current_span(
            name, links=_links(carriers), attributes={"payments.batch.size": len(carriers), **attributes}) as span:
        yield span


@contextlib.contextmanager
def consumer_span(name: str, headers: Headers | None, raw: bytes | None, **attributes: Any) -> Iterator[None]:
    """Processing one Kafka record: a child of the context in its W3C headers (else of its
    CloudEvent's ``traceparent``), linked to the CloudEvent's when both differ."""
    if not enabled():
        yield
        return
    hop, original = span_context(headers_carrier(headers)), span_context(cloudevent_carrier(raw))
    links = [Link(original, {"payments.link": "cloudevent"})] if hop and original and original != hop else []
    with _attached(_continuing(hop or original)), tracer().start_as_current_span(
            name, kind=SpanKind.CONSUMER, links=links, attributes=attributes):
        yield


@contextlib.contextmanager
def processing_spans(name: str, messages: Sequence[tuple[Headers | None, Carrier, Mapping[str, Any]]]
                     ) -> Iterator[list[Span | None]]:
    """Consumed events processed together, one ``(headers, event's carrier, attributes)``
    each: a span of its own trace around the work (current: the database and cache calls
    are its children) and, inside it, one span per event linked to the event's context
    (its CloudEvent ``traceparent``) and to the hop that delivered it (the record's W3C
    headers). Yields the per-event spans, in order (Nones when not tracing)."""
    if not enabled():
        yield [None] * len(messages)
        return
    with _attached(otel_context.Context()), tracer().start_as_current_span(
            f"{name} batch", attributes={"payments.batch.size": len(messages)}):
        spans: list[Span | None] = [tracer().start_span(
            name, kind=SpanKind.CONSUMER, attributes=attributes,
            links=_links([carrier], **{"payments.link": "cloudevent"})
            + _links([headers_carrier(headers)], **{"payments.link": "kafka-record"}))
            for headers, carrier, attributes in messages]
        try:
            yield spans
        finally:
            for span in spans:
                span.end()  # type: ignore[union-attr]


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span of our own around a block (nothing when not tracing)."""
    return tracer().start_as_current_span(name, attributes=attributes) if enabled() else contextlib.nullcontext()


# --------------------------------------------------------------------------- logs, metrics


def log_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for a log line (empty without one)."""
    ctx = trace.get_current_span().get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")} if ctx.is_valid else {}


def exemplar() -> dict[str, str] | None:
    """The current sampled span as a Prometheus exemplar (a latency bucket links to its trace)."""
    return (log_ids() or None) if trace.get_current_span().get_span_context().trace_flags.sampled else None
