"""The gateway's Prometheus metrics — requests by route and status, TaskRouter events by type/outcome — served on a
listener of its own (`FLEXSF_GATEWAY_METRICS_ADDRESS`, host:port, `/metrics`), as the worker's are: never on the
public app, whose port faces the internet. Unset, nothing is served; the public app counts every request either way.

Each app has its own registry (no process-global state: several apps in one process, as in tests, count apart).
The route label is the route's template (`/agent/tasks/{task_sid}`), never the raw path, so label values stay few;
requests that match no route count as `unmatched`. Every request also binds the task sid in its path (if any) to
the log lines it causes.
"""

from __future__ import annotations

import re
import threading
import time
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flexsf import logs
from flexsf.vocabulary import HANDLED_EVENTS

# Outcomes of one TaskRouter callback. Malformed: not an event we can read (no TaskSid, attributes not a JSON object).
# Poison: readable, but over a bound of what is carried into Temporal (body or attributes too large, too deeply
# nested, not encodable).
SIGNALLED, IGNORED, REJECTED_SIGNATURE, MALFORMED, POISON, UNAVAILABLE = (
    "signalled",
    "ignored",
    "rejected_signature",
    "malformed",
    "poison",
    "unavailable",
)
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9-]*(?:\.[a-z0-9-]+){1,3}")
_TASK_SID_IN_PATH = re.compile(r"/(WT[0-9a-fA-F]{32})(?:/|$)")


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flexsf_gateway_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flexsf_gateway_request_duration_seconds",
            "HTTP request duration by route",
            ["route"],
            registry=self.registry,
        )
        self.events = Counter(
            "flexsf_taskrouter_events",
            "TaskRouter callbacks by event type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.repaired = Counter(
            "flexsf_taskrouter_events_repaired",
            "TaskRouter callbacks signalled with unreadable text (lone surrogates, bytes not UTF-8) replaced by U+FFFD",
            ["type"],
            registry=self.registry,
        )

    def taskrouter_event(self, event_type: str | None, outcome: str, *, verified: bool) -> None:
        """`event_type` is only trusted (used as a label) once the signature checked out; else `unverified`."""
        self.events.labels(type=_type_label(event_type, verified), outcome=outcome).inc()

    def taskrouter_repaired(self, event_type: str) -> None:
        self.repaired.labels(type=_type_label(event_type, True)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _type_label(event_type: str | None, verified: bool) -> str:
    if not verified:
        return "unverified"
    if event_type in HANDLED_EVENTS or (event_type and _EVENT_TYPE.fullmatch(event_type)):
        return event_type
    return "other"


class MetricsMiddleware:
    """Counts every request by route template and status, and binds the path's task sid to its log lines."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = _TASK_SID_IN_PATH.search(scope.get("path", ""))
        logs.set_task(found[1] if found else None)
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route=route, method=scope.get("method", "?"), status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


class MetricsListener:
    """`/metrics` of one registry on its own host:port (prometheus_client's threaded HTTP server)."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.server: WSGIServer
        self.thread: threading.Thread
        self.server, self.thread = start_http_server(int(port), addr=self.host, registry=registry)

    @property
    def port(self) -> int:
        return self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def install(app: FastAPI) -> None:
    """Count every request of `app` (outermost middleware); `MetricsListener(app.state.metrics.registry, …)` serves
    them."""
    app.state.metrics = GatewayMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
