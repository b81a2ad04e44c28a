"""OpenTelemetry traces of the worker and the gateway: off unless the standard `OTEL_*` environment turns them on.

On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none`. Spans are batched and sent over OTLP/HTTP (protobuf); the exporter, the batch
processor and the sampler read the rest of the standard variables themselves (`OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).

What is traced: every Temporal client `flexsf.temporal_client.connect` builds carries Temporal's `TracingInterceptor`
(a worker takes its client's interceptors, so the workflows and activities too), the gateway's requests (FastAPI) and
every `requests` call (simple-salesforce and twilio). The interceptor's header carries the trace from the gateway's
signal-with-start into the workflow and on to its activities: one task's path from webhook to Salesforce write is one
trace.

The packages are the `otel` extra, imported only below and only once tracing is on: without the variables nothing of
OpenTelemetry's SDK is loaded, and with them but without the extra the process refuses to start in one line.

Nothing about the customer, and no secret, leaves in a span: URLs lose their query strings (a SOSL search carries the
caller's number in `q=`, a Copilot GET its note), captured headers are dropped, an exception event keeps only its
type and a span's status only the exception's type (an error can quote a name or a number).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flexsf.settings import ConfigurationError

EXTRA_HINT = "pip install 'flex-salesforce-temporal[otel]'"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# Health probes every few seconds would drown the traces; an operator's own list replaces this one.
EXCLUDED_URLS = "/healthz,/readyz"
# Attributes that hold a URL or a path with its query string (old and stable HTTP semantic conventions), and the query.
_URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target"})
_QUERY_ATTRIBUTES = frozenset({"url.query"})
# Captured headers, should an operator turn capture on (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*): Flex tokens in
# Authorization, Twilio's signatures, Salesforce's session.
_HEADER_ATTRIBUTES = ("http.request.header.", "http.response.header.")
_EXCEPTION_TYPE = "exception.type"
_STATUS_TYPE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::|$)")
# How long a stopping process waits for its last spans. The SDK would wait up to 30 s for a collector that does not
# answer, past a stopping worker's grace (docker-compose.yml: 30 s, of which the drain may take 20).
FLUSH_TIMEOUT_S = 5.0

_active: _Tracing | None = None


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OpenTelemetry variables ask for traces (an OTLP endpoint, the SDK not disabled)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def _check_supported(env: Mapping[str, str]) -> None:
    """Refuse settings this exporter would silently ignore: another exporter, or OTLP over gRPC (its port would get
    HTTP requests it cannot read, and every span would be lost without a word)."""
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    if any(e != "otlp" for e in exporters):
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: only 'otlp' (or 'none')")
    for name in PROTOCOL_VARIABLES:
        protocol = env.get(name, "").strip().lower()
        if protocol and protocol != "http/protobuf":
            raise ConfigurationError(f"{name}={protocol!r}: traces are sent as OTLP over HTTP, 'http/protobuf' only")


def _not_installed(exc: ImportError) -> ConfigurationError:
    named = " or ".join(ENDPOINT_VARIABLES)
    return ConfigurationError(
        f"tracing is configured ({named}) but OpenTelemetry is not installed ({exc.name} is missing): {EXTRA_HINT}"
    )


class _Tracing:
    """The process's tracer provider and the Temporal interceptor built on it."""

    def __init__(self, service: str) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.instrumentation.requests import RequestsInstrumentor
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from temporalio.contrib.opentelemetry import TracingInterceptor
        except ImportError as exc:
            raise _not_installed(exc) from None
        resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        # Stopped by `shutdown` (at exit too), which bounds the wait; the SDK's own exit hook would not.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(_ScrubbingExporter(OTLPSpanExporter())))
        trace.set_tracer_provider(self.provider)
        RequestsInstrumentor().instrument(tracer_provider=self.provider)
        self.interceptor = TracingInterceptor(self.provider.get_tracer("flexsf.temporal"))


def start(service: str) -> bool:
    """Set up tracing for this process if the environment asks for it (`service`: the name when OTEL_SERVICE_NAME
    does not give one); whether it is on. Once per process: later calls keep the first set-up."""
    global _active
    if _active is not None:
        return True
    if not tracing_enabled():
        return False
    _check_supported(os.environ)
    _active = _Tracing(service)
    atexit.register(shutdown)
    return True


def temporal_interceptors() -> list:
    """Temporal's tracing interceptor when this process traces, for `Client.connect(interceptors=…)`; none otherwise."""
    return [_active.interceptor] if _active is not None else []


def instrument_app(app: Any) -> None:
    """FastAPI's server spans for `app` when this process traces. Without ASGI's per-message send/receive spans (two
    or three per request, no information the server span lacks); health probes excluded unless the operator lists
    OTEL_PYTHON_FASTAPI_EXCLUDED_URLS or OTEL_PYTHON_EXCLUDED_URLS."""
    if _active is None:
        return
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:  # the worker's packages without the gateway's: a partial install
        raise _not_installed(exc) from None

    own = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_active.provider,
        excluded_urls=own or EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
    )


def _within(timeout_s: float, step) -> None:
    """Run `step` on a thread of its own for at most `timeout_s` (the SDK does not bound its own waits)."""
    thread = threading.Thread(target=step, name="otel-flush", daemon=True)
    thread.start()
    thread.join(timeout_s)


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Send the spans still batched (a stopping gateway), waiting at most `timeout_s`."""
    if _active is not None:
        _within(timeout_s, _active.provider.force_flush)


def shutdown(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Send the last spans and stop the exporter, waiting at most `timeout_s`: at exit, and before the worker leaves
    without interpreter teardown (its `os._exit`), where exit hooks do not run."""
    if _active is not None:
        _within(timeout_s, _active.provider.shutdown)


# ---- what leaves the process ----------------------------------------------------------------------------------


def without_query(value: str) -> str:
    """A URL or a path without its query string and fragment."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value.split("?", 1)[0].split("#", 1)[0]
    return urlunsplit(parts._replace(query="", fragment=""))


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        key: without_query(value) if key in _URL_ATTRIBUTES and isinstance(value, str) else value
        for key, value in (attributes or {}).items()
        if key not in _QUERY_ATTRIBUTES and not key.startswith(_HEADER_ATTRIBUTES)
    }


def status_description(description: str | None) -> str | None:
    """Only the exception's type of a status such as "ApplicationError: <message>"."""
    if not description:
        return None
    found = _STATUS_TYPE.match(description)
    return found[1] if found else None


def scrub_span(span: Any) -> Any:
    """A copy of an ended span without query strings, exception messages and stack traces."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    events = [
        Event(event.name, {k: v for k, v in event.attributes.items() if k == _EXCEPTION_TYPE}, event.timestamp)
        if event.name == "exception"
        else event
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, status_description(span.status.description)),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _ScrubbingExporter:
    """The OTLP exporter, fed scrubbed copies: one place for every instrumentation's spans, whatever it records."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[Any]) -> Any:
        return self._exporter.export([scrub_span(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)
