"""The product's metrics: names, labels and where they are recorded, in one place.

Worker side, everything goes through Temporal's metric meters, so the product's counters are exported next to the
SDK's own metrics by the worker's Prometheus endpoint (`FLEXSF_WORKER_METRICS_ADDRESS`):

- inside an activity, `activity.metric_meter()` (labels `namespace`, `task_queue`, `activity_type` are added);
- elsewhere (a gauge, a call made outside an activity), the runtime meter of the worker's client, bound once by
  `bind_runtime()` when the worker is built; with none bound, a no-op meter.

Names already end in `_total` for counters: the Temporal exporter adds no suffix of its own.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import temporalio.runtime
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

ACTIVITY_LOGS = "flexsf_salesforce_task_writes_total"
ACTIVITY_LOG_FIELDS_DROPPED = "flexsf_activity_log_fields_dropped_total"
ACTIVITY_LOGS_HELD = "flexsf_activity_logs_held_total"
SALESFORCE_CALLS = "flexsf_salesforce_calls_total"
SALESFORCE_RETRIES = "flexsf_salesforce_retries_total"
SALESFORCE_API_USAGE = "flexsf_salesforce_api_usage"
SALESFORCE_API_LIMIT = "flexsf_salesforce_api_limit"
TWILIO_CALLS = "flexsf_twilio_calls_total"
TWILIO_RETRIES = "flexsf_twilio_retries_total"

_DESCRIPTIONS = {
    ACTIVITY_LOGS: "Writes of the call activity (a Salesforce Task) by result: created, amended, failed (an attempt)",
    ACTIVITY_LOG_FIELDS_DROPPED: "Task fields left out of the call activity because Salesforce refused them as gone, "
    "by field (WhoId, WhatId, OwnerId) and Salesforce errorCode",
    ACTIVITY_LOGS_HELD: "Attempts of the call activity's write held back, before any call, because the org's API usage "
    "was at or above FLEXSF_SALESFORCE_API_BUDGET_SHARE of its daily limit (the log waits and tries again)",
    SALESFORCE_CALLS: "HTTP calls to Salesforce by kind, method and status ('unreachable': no answer)",
    SALESFORCE_RETRIES: "Retried attempts of Salesforce activities",
    SALESFORCE_API_USAGE: "Salesforce API requests used in the org's 24-hour window (Sforce-Limit-Info)",
    SALESFORCE_API_LIMIT: "Salesforce API requests allowed in the org's 24-hour window (Sforce-Limit-Info)",
    TWILIO_CALLS: "HTTP calls to Twilio by product, method and status ('unreachable': no answer)",
    TWILIO_RETRIES: "Retried attempts of Twilio activities",
}

_runtime_meter: MetricMeter = MetricMeter.noop
_lock = threading.Lock()


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime serving Prometheus text on `http://<bind_address>/metrics` (pass it to `Client.connect`).

    Temporal's exporter defaults are kept (durations in milliseconds), as Temporal's published dashboards expect.
    """
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


def bind_runtime(runtime: temporalio.runtime.Runtime | None) -> None:
    """Record outside activities through this runtime's meter (the worker's client's runtime)."""
    global _runtime_meter
    with _lock:
        _runtime_meter = (runtime or temporalio.runtime.Runtime.default()).metric_meter


def _meter() -> MetricMeter:
    if activity.in_activity():
        try:
            return activity.metric_meter()
        except RuntimeError:  # a non-threaded sync activity (multiprocess): no meter
            pass
    return _runtime_meter


def _count(name: str, labels: dict[str, str] | None = None) -> None:
    _meter().create_counter(name, _DESCRIPTIONS[name]).add(1, labels)


def activity_logged(result: str) -> None:
    """result: created | amended | failed."""
    _count(ACTIVITY_LOGS, {"result": result})


def activity_log_field_dropped(field: str, reason: str) -> None:
    """reason: the Salesforce errorCode (ENTITY_IS_DELETED, INVALID_CROSS_REFERENCE_KEY, INACTIVE_OWNER_OR_USER)."""
    _count(ACTIVITY_LOG_FIELDS_DROPPED, {"field": field, "reason": reason})


def activity_log_held() -> None:
    """A log held back by the org's API budget (activities.salesforce.ApiBudget)."""
    _count(ACTIVITY_LOGS_HELD)


def note_attempt(system: str) -> None:
    """Call at the start of an activity of `system` (salesforce | twilio); counts attempts after the first."""
    if activity.in_activity() and activity.info().attempt > 1:
        _count(SALESFORCE_RETRIES if system == "salesforce" else TWILIO_RETRIES)


def salesforce_kind(url: str) -> str:
    """What a Salesforce REST URL does, coarse enough to be a label: token, search, query, sobject, limits, other."""
    path = urlsplit(url).path
    if path.endswith("/oauth2/token"):
        return "token"
    for kind in ("search", "parameterizedSearch", "query", "sobjects", "limits", "composite"):
        if f"/{kind}" in path:
            return {"parameterizedSearch": "search", "sobjects": "sobject"}.get(kind, kind)
    return "other"


def salesforce_call(url: str, method: str, status: int | str) -> None:
    _count(SALESFORCE_CALLS, {"kind": salesforce_kind(url), "method": method.upper(), "status": str(status)})


def twilio_product(url: str) -> str:
    """`https://taskrouter.twilio.com/...` -> taskrouter, `flex-api` -> flex_api; not a Twilio host -> other.
    Callers pass the SDK's URL, before any rebasing onto a sandbox."""
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".twilio.com"):
        return host.removesuffix(".twilio.com").replace("-", "_").split(".")[0]
    return "other"


def twilio_call(url: str, method: str, status: int | str) -> None:
    _count(TWILIO_CALLS, {"product": twilio_product(url), "method": method.upper(), "status": str(status)})


def salesforce_api_usage(used: int, limit: int) -> None:
    # The org-wide window is one number per process: through the runtime meter, without per-activity labels.
    _runtime_meter.create_gauge(SALESFORCE_API_USAGE, _DESCRIPTIONS[SALESFORCE_API_USAGE]).set(used)
    _runtime_meter.create_gauge(SALESFORCE_API_LIMIT, _DESCRIPTIONS[SALESFORCE_API_LIMIT]).set(limit)
