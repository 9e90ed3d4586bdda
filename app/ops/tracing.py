"""OpenTelemetry tracing, off by default: ``SEQSERVE_OTEL=true`` with the ``otel`` extra
(``pip install 'seqserve[otel]'``).

When on, every HTTP request gets a server span (``TracingMiddleware``), a child of the
caller's span when the request carries a W3C ``traceparent`` (the propagators are
OpenTelemetry's, so ``OTEL_PROPAGATORS`` applies). The response carries a
``traceresponse`` header (W3C Trace Context level 2: ``00-<trace id>-<span id>-<flags>``
of the server span) so a caller without tracing can still quote its trace. Inside it,
a classification row records a ``queue`` span (arrival to the start of its ONNX
Runtime call) and an ``inference`` span (the call), and a generation records
``queue`` (arrival to its prefill) and ``generate`` (prefill to the last character).
These are recorded after the fact with their measured times, from the loops
(app/engine/batcher.py, app/engine/generator.py), so tracing adds nothing to their work when off
and little when on.

Spans go to the tracer provider already installed (``opentelemetry-instrument``, or
the application's own), else to a new SDK provider exporting over OTLP/HTTP as the
standard ``OTEL_EXPORTER_OTLP_*`` / ``OTEL_SERVICE_NAME`` variables say.

The service imports and runs without any OpenTelemetry package: nothing here
imports one until ``setup`` is called with tracing on.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops.logs import note_request, printable, request_id_var

log = logging.getLogger("seqserve.tracing")

# Tests put an SDK provider (with an in-memory exporter) here instead of the global one.
PROVIDER: Any = None
INSTALL_HINT = "SEQSERVE_OTEL=true needs the otel extra: pip install 'seqserve[otel]'"

# (tracer, OpenTelemetry context holding the request's server span): set by the
# middleware for the request under way; None when tracing is off.
_current: ContextVar[tuple[Any, Any] | None] = ContextVar("seqserve_trace", default=None)
# perf_counter (what the loops measure with) -> Unix nanoseconds (what spans take)
_EPOCH_NS = time.time_ns() - time.perf_counter_ns()


def _ns(perf: float) -> int:
    return _EPOCH_NS + int(perf * 1e9)


def available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def setup(settings: Any) -> Any:
    """The service's tracer when SEQSERVE_OTEL is true (None otherwise)."""
    if not settings.otel:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    provider = PROVIDER
    if provider is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):  # nobody installed one: ours
            provider = TracerProvider(resource=Resource.create({"service.name": "seqserve"}))
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                log.warning("tracing on but no OTLP exporter installed (the otel extra has "
                            "it): spans are recorded and dropped")
            else:
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
    from app import __version__

    return provider.get_tracer("seqserve", __version__)


def current() -> tuple[Any, Any] | None:
    """The request's (tracer, context), to record spans of its work later; None when
    tracing is off. Called where a request hands work to a loop (``submit``)."""
    return _current.get()


def record(trace: tuple[Any, Any], name: str, start: float, end: float,
           **attributes: Any) -> None:
    """A finished span ``name`` from ``start`` to ``end`` (``time.perf_counter()``
    values), child of the request's server span. Never raises: tracing must not fail
    an answer."""
    try:
        tracer, ctx = trace
        span = tracer.start_span(name, context=ctx, start_time=_ns(start), attributes=attributes)
        span.end(end_time=_ns(end))
    except Exception:  # noqa: BLE001
        log.debug("span %s not recorded", name, exc_info=True)


class TracingMiddleware:
    """A server span per HTTP request (inside the request layer, app/http/layer.py, so the
    request id is known): ``traceparent`` in, ``traceresponse`` out."""

    def __init__(self, app: ASGIApp, tracer: Any, known_paths: set[str] | frozenset[str] = frozenset()):
        from opentelemetry import context, propagate, trace

        self.app = app
        self.tracer = tracer
        self.known_paths = known_paths  # every route's path template (the route label)
        self._context, self._propagate, self._trace = context, propagate, trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = self._trace
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate", b"baggage")}
        parent = self._propagate.extract(carrier)
        method = scope["method"]
        # from the request's arrival (stamped by the request-context middleware), and on
        # the clock the loops' spans use, so theirs nest inside it
        arrived = scope.get("state", {}).get("arrived") or time.perf_counter()
        span = self.tracer.start_span(
            f"{method} {printable(scope['path'], 100)}", context=parent,
            kind=trace.SpanKind.SERVER, start_time=_ns(arrived),
            attributes={"http.request.method": method, "url.path": printable(scope["path"]),
                        "seqserve.request_id": request_id_var.get()})
        ctx = trace.set_span_in_context(span, parent)
        sc = span.get_span_context()
        trace_id = f"{sc.trace_id:032x}"
        header = f"00-{trace_id}-{sc.span_id:016x}-{int(sc.trace_flags):02x}".encode()
        note_request(trace_id=trace_id)
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                   (b"traceresponse", header)]}
            await send(message)

        token = _current.set((self.tracer, ctx))
        attached = self._context.attach(ctx)  # for any other instrumentation inside
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as e:
            span.record_exception(e)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(e).__name__))
            raise
        finally:
            self._context.detach(attached)
            _current.reset(token)
            route = getattr(scope.get("route"), "path", None) or (
                scope["path"] if scope["path"] in self.known_paths else None)
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end(end_time=_ns(time.perf_counter()))
